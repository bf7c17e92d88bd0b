using System.Text;
using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Tasks;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>Loaders on small hand-made files in a temporary folder, including malformed lines.</summary>
public sealed class LoaderTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ullme-eval-" + Guid.NewGuid().ToString("N"));

    public LoaderTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string relative, string content, bool bom = false)
    {
        string path = Path.Combine(_dir, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, content, new UTF8Encoding(bom));
        return path;
    }

    [Fact]
    public void StsBenchmarkReadsFieldsFiveToSevenIgnoresExtrasAndKeepsQuotes()
    {
        string path = Write("stsbenchmark/sts-dev.csv",
            "main-captions\tMSRvid\t2012test\t0000\t5.000\tA man \"dances\".\tA man dances.\n" +
            "main-news\theadlines\t2013\t0001\t1.5\tFirst\tSecond\tsource-a\tsource-b\n");
        var pairs = StsBenchmarkFormat.Read(path);
        Assert.Equal(2, pairs.Count);
        Assert.Equal(new StsPair("A man \"dances\".", "A man dances.", 5.0), pairs[0]);
        Assert.Equal(new StsPair("First", "Second", 1.5), pairs[1]);

        var task = BuiltInTasks.Create("stsbenchmark", _dir);
        Assert.Equal("STSBenchmark", task.Name);
        Assert.Equal(["validation"], task.Splits);
        Assert.Equal("b0fddb56ed78048fa8b90373c8a3cfc37b684831", task.DatasetRevision);
    }

    [Fact]
    public void MalformedStsBenchmarkLineNamesFileAndLine()
    {
        string path = Write("sts-train.csv", "g\tf\t2012\t1\t3.0\tA\tB\ng\tf\t2012\t2\t2.0\tonly one sentence\n");
        var e = Assert.Throws<UllmeException>(() => StsBenchmarkFormat.Read(path));
        Assert.Contains($"{path}:2:", e.Message);
        Assert.Contains("at least 7", e.Message);

        string bad = Write("bad/sts-dev.csv", "g\tf\t2012\t1\tfive\tA\tB\n");
        var e2 = Assert.Throws<UllmeException>(() => StsBenchmarkFormat.Read(bad));
        Assert.Contains($"{bad}:1:", e2.Message);
        Assert.Contains("'five' is not a number", e2.Message);
    }

    [Fact]
    public void SickUsesHeaderAndMtebTestIsAllFilesConcatenated()
    {
        const string header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n";
        Write("sick/SICK_train.txt", header + "1\tA\tB\t4.5\tNEUTRAL\n2\tC\tD\t3.2\tNEUTRAL\n");
        Write("sick/SICK_trial.txt", header + "3\tE\tF\t1.0\tCONTRADICTION\n6\tK\tL\t2.0\tNEUTRAL\n");
        var task = (StsTask)BuiltInTasks.Create("SICK-R", _dir);
        Assert.Equal(["train", "validation"], task.Splits);
        Assert.Equal(new StsPair("A", "B", 4.5), task.Pairs("train")[0]);

        Write("sick/SICK_test_annotated.txt", header + "4\tG\tH\t2.0\tNEUTRAL\n5\tI\tJ\t5.0\tENTAILMENT\n");
        task = (StsTask)BuiltInTasks.Create("SICK-R", _dir);
        // MTEB's SICK-R test set is train + trial + test (9,927 pairs in the full release).
        Assert.Equal(6, task.Pairs("test").Count);
        Assert.Equal("A", task.Pairs("test")[0].Text1);

        string broken = Write("sick2/SICK_train.txt", "pair_ID\tsentence_A\tsentence_B\n1\tA\tB\n");
        var e = Assert.Throws<UllmeException>(() => SickFormat.Read(broken));
        Assert.Contains($"{broken}:1:", e.Message);
    }

    [Fact]
    public void SemEvalConcatenatesSubsetsAndSkipsUnscoredPairs()
    {
        Write("sts13/STS.input.OnWN.txt", "a1\ta2\nb1\tb2\nc1\tc2\n");
        Write("sts13/STS.gs.OnWN.txt", "0.8\n\n3.8\n");
        Write("sts13/STS.input.headlines.txt", "h1\th2\n");
        Write("sts13/STS.gs.headlines.txt", "4\n");
        Write("sts13/00-readme.txt", "not data");
        var task = (StsTask)BuiltInTasks.Create("STS13", _dir);
        Assert.Equal(["test"], task.Splits);
        var pairs = task.Pairs("test");
        // OnWN before headlines (ordinal name order), the unscored second OnWN pair skipped.
        Assert.Equal([new StsPair("a1", "a2", 0.8), new StsPair("c1", "c2", 3.8), new StsPair("h1", "h2", 4)], pairs);

        // STS 2016 naming with extra source columns.
        Write("sts16/STS2016.input.answer-answer.txt", "x1\tx2\tsrc1\tsrc2\ny1\ty2\tsrc1\tsrc2\n");
        Write("sts16/STS2016.gs.answer-answer.txt", "1\n2\n");
        Assert.Equal(2, ((StsTask)BuiltInTasks.Create("STS16", _dir)).Pairs("test").Count);
    }

    /// <summary>
    /// Writes a SemEval sub-set as distributed: <paramref name="inputLines"/> input pairs, the gold file with one line
    /// per input line, empty at <paramref name="unscored"/> (SemEval leaves the last pairs of STS15 answers-forums and
    /// STS16 answer-answer unscored, so the gold file ends in empty lines). Scores encode the line number so that a
    /// misalignment shows.
    /// </summary>
    private void WriteSubset(string folder, string name, int inputLines, ISet<int> unscored, string prefix = "STS")
    {
        var input = new StringBuilder();
        var gold = new StringBuilder();
        for (int i = 0; i < inputLines; i++)
        {
            input.Append($"{name} left {i}\t{name} right {i}\n");
            gold.Append(unscored.Contains(i) ? "\n" : $"{i % 6}.{i % 1000:D3}\n");
        }
        Write($"{folder}/{prefix}.input.{name}.txt", input.ToString());
        Write($"{folder}/{prefix}.gs.{name}.txt", gold.ToString());
    }

    [Fact]
    public void SemEvalTrailingUnscoredPairsLoadAlignedByLine()
    {
        // STS15 answers-forums: 2000 input lines, the gold file's last 6 lines empty (1,994 pairs in the release);
        // here also 3 unscored pairs in the middle, as other sub-sets have.
        var forumsGaps = new HashSet<int> { 17, 500, 1203, 1994, 1995, 1996, 1997, 1998, 1999 };
        WriteSubset("sts15", "answers-forums", 2000, forumsGaps);
        WriteSubset("sts15", "headlines", 750, new HashSet<int>());
        var sts15 = ((StsTask)BuiltInTasks.Create("STS15", _dir)).Pairs("test");
        Assert.Equal(2000 - forumsGaps.Count + 750, sts15.Count);
        // Every pair carries the score of its own line: text "left i" with score (i % 6).(i % 1000).
        foreach (var p in sts15)
        {
            int i = int.Parse(p.Text1[(p.Text1.LastIndexOf(' ') + 1)..]);
            Assert.EndsWith($" right {i}", p.Text2);
            Assert.Equal(double.Parse($"{i % 6}.{i % 1000:D3}", System.Globalization.CultureInfo.InvariantCulture), p.Score, 12);
            if (p.Text1.StartsWith("answers-forums")) Assert.DoesNotContain(i, forumsGaps);
        }
        Assert.Equal("answers-forums left 1993", sts15[2000 - forumsGaps.Count - 1].Text1);

        // STS16 answer-answer: 1572 input lines, 3 trailing empty gold lines -> 1569 pairs; 2016 naming.
        WriteSubset("sts16", "answer-answer", 1572, new HashSet<int> { 1569, 1570, 1571 }, prefix: "STS2016");
        var sts16 = ((StsTask)BuiltInTasks.Create("STS16", _dir)).Pairs("test");
        Assert.Equal(1569, sts16.Count);
        Assert.Equal("answer-answer left 1568", sts16[^1].Text1);

        // An input file that ends in an empty line (not a pair) still pairs with a gold file without one.
        Write("sts14/STS.input.x.txt", "a\tb\nc\td\ne\tf\n\n");
        Write("sts14/STS.gs.x.txt", "1\n\n2\n");
        Assert.Equal([new StsPair("a", "b", 1), new StsPair("e", "f", 2)], ((StsTask)BuiltInTasks.Create("STS14", _dir)).Pairs("test"));
    }

    [Fact]
    public void SemEvalGoldScoresBeyondTheInputAreRefused()
    {
        Write("sts12/STS.input.MSRvid.txt", "a1\ta2\nb1\tb2\n");
        string gold = Write("sts12/STS.gs.MSRvid.txt", "1\n2\n3\n");
        var e = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("STS12", _dir));
        Assert.Contains(gold, e.Message);
        Assert.Contains("pair up", e.Message);
    }

    /// <summary>The shared STS13 sub-sets (headlines 750, OnWN 561 pairs as in MTEB's STS13) load in full.</summary>
    [AssetFact]
    public void SharedSts13LoadsMtebPairCounts()
    {
        string folder = Assets.Path("data", "sts13");
        Assert.Equal(561, SemEvalStsFormat.ReadSubset(Path.Combine(folder, "STS.input.OnWN.txt")).Count);
        Assert.Equal(750, SemEvalStsFormat.ReadSubset(Path.Combine(folder, "STS.input.headlines.txt")).Count);
    }

    [Fact]
    public void SemEvalErrorsNameTheFile()
    {
        Write("sts12/STS.input.MSRpar.txt", "a1\ta2\nb1\tb2\n");
        string gold = Write("sts12/STS.gs.MSRpar.txt", "1\n");
        var e = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("STS12", _dir));
        Assert.Contains(gold, e.Message);
        Assert.Contains("pair up", e.Message);

        Write("sts14/STS.input.x.txt", "only-one-field\n");
        Write("sts14/STS.gs.x.txt", "2\n");
        var e2 = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("STS14", _dir));
        Assert.Contains("STS.input.x.txt:1:", e2.Message);

        Write("sts15/STS.input.y.txt", "a\tb\n");
        var e3 = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("STS15", _dir));
        Assert.Contains("STS.gs.y.txt", e3.Message);
    }

    [Fact]
    public void CsvHandlesQuotedCommasDoubledQuotesAndNewlines()
    {
        string path = Write("banking77/train.csv",
            "text,category\n" +
            "I am still waiting on my card?,card_arrival\n" +
            "\"Hi, where is \"\"my\"\" card?\",card_arrival\n" +
            "\"two\nlines\",lost_card\n" +
            "plain,lost_card\n");
        var rows = TableFormat.ReadLabeled(path);
        Assert.Equal(4, rows.Count);
        Assert.Equal(new LabeledText("Hi, where is \"my\" card?", "card_arrival"), rows[1]);
        Assert.Equal("two\nlines", rows[2].Text);

        var records = DataFiles.ReadCsv(path).ToList();
        Assert.Equal([1, 2, 3, 4, 6], records.Select(r => r.Line)); // line of each record's start
    }

    [Fact]
    public void MalformedCsvNamesFileAndLine()
    {
        string unterminated = Write("u.csv", "text,category\nok,a\n\"never closed,b\nmore,c\n");
        var e = Assert.Throws<UllmeException>(() => TableFormat.ReadLabeled(unterminated));
        Assert.Contains($"{unterminated}:3:", e.Message);

        string stray = Write("s.csv", "text,category\nok,a\nbad \"quote,b\n");
        var e2 = Assert.Throws<UllmeException>(() => TableFormat.ReadLabeled(stray));
        Assert.Contains($"{stray}:3:", e2.Message);

        string fields = Write("f.csv", "text,category\nok,a,extra\n");
        var e3 = Assert.Throws<UllmeException>(() => TableFormat.ReadLabeled(fields));
        Assert.Contains($"{fields}:2:", e3.Message);

        string noLabel = Write("n.csv", "text,other\nok,a\n");
        var e4 = Assert.Throws<UllmeException>(() => TableFormat.ReadLabeled(noLabel));
        Assert.Contains("no label column", e4.Message);
    }

    [Fact]
    public void Banking77TrainOnlyCrossValidatesAndWithTestTrainsOnTrain()
    {
        var sb = new StringBuilder("text,category\n");
        for (int i = 0; i < 12; i++) sb.Append(CultureInfo(i)).Append(",c").Append(i % 2).Append('\n');
        Write("banking77/train.csv", sb.ToString());
        var task = (ClassificationTask)BuiltInTasks.Create("Banking77Classification", _dir);
        Assert.True(task.IsCrossValidation);
        Assert.Equal(["train"], task.Splits);
        Assert.Equal("Given a online banking query, find the corresponding intents", task.DefaultInstruction);

        Write("banking77/test.csv", "text,category\nq,c0\nr,c1\n");
        task = (ClassificationTask)BuiltInTasks.Create("Banking77Classification", _dir);
        Assert.False(task.IsCrossValidation);
        Assert.Equal(["test"], task.Splits);

        var clustering = BuiltInTasks.Create("Banking77Clustering", _dir);
        Assert.Equal(["train", "test"], clustering.Splits);
    }

    private static string CultureInfo(int i) => $"text number {i}";

    [Fact]
    public void MrpcSkipsBomAndReadsLabels()
    {
        string path = Write("mrpc/msr_paraphrase_train.txt",
            "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said \" yes \" .\tHe agreed .\n0\t3\t4\tA\tB\n", bom: true);
        var pairs = MrpcFormat.Read(path);
        Assert.Equal([new LabeledPair("He said \" yes \" .", "He agreed .", 1), new LabeledPair("A", "B", 0)], pairs);
        var task = BuiltInTasks.Create("MRPC", _dir);
        Assert.Equal(TaskType.PairClassification, task.Type);

        string bad = Write("mrpc2/msr_paraphrase_train.txt", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n2\t1\t2\tA\tB\n");
        var e = Assert.Throws<UllmeException>(() => MrpcFormat.Read(bad));
        Assert.Contains($"{bad}:2:", e.Message);
    }

    [Fact]
    public void SciFactCsvParsesNumpyListAbstractsAndCitedDocs()
    {
        Write("scifact/corpus_train.csv",
            "doc_id,title,abstract,structured\n" +
            // numpy repr: one string per line, double quotes when the text holds a single quote, Python escapes.
            "4983,Title one,\"['First sentence.'\n \"\"It's second, with \\\\ and \\n.\"\"\n 'Third \\'quoted\\' \\x41\\u00e9.']\",False\n" +
            "5000,Title two,\"['Only sentence.']\",False\n");
        Write("scifact/claims_train.csv",
            "id,claim,evidence_doc_id,evidence_label,evidence_sentences,cited_doc_ids\n" +
            "0,Claim zero.,,,[],[4983]\n" +
            "2,Claim two.,4983,SUPPORT,[0],[ 4983 5000]\n" +
            "2,Claim two.,5000,CONTRADICT,[0],[ 4983 5000]\n");
        var task = (RetrievalTask)BuiltInTasks.Create("SciFact", _dir);
        Assert.Equal(["train"], task.Splits);
        var docs = task.Data.Corpus;
        Assert.Equal("First sentence. It's second, with \\ and \n. Third 'quoted' A\u00e9.", docs[0].Text);
        Assert.Equal("Title one " + docs[0].Text, docs[0].EmbeddingText);
        var qrels = task.Data.QrelsBySplit["train"];
        Assert.Equal(["4983"], qrels["0"].Keys);
        Assert.Equal(["4983", "5000"], qrels["2"].Keys.Order());
        Assert.Equal(2, task.Data.Queries.Count);

        string bad = Write("scifact2/corpus_train.csv", "doc_id,title,abstract,structured\n1,T,not a list,False\n");
        Write("scifact2/claims_train.csv", "id,claim,evidence_doc_id,evidence_label,evidence_sentences,cited_doc_ids\n0,C,,,[],[1]\n");
        var e = Assert.Throws<UllmeException>(() => BuiltInTasks.CreateGeneric("retrieval", Path.Combine(_dir, "scifact2"), _dir));
        Assert.Contains($"{bad}:2:", e.Message);
    }

    [Fact]
    public void BeirFolderReadsCorpusQueriesAndQrelsPerSplit()
    {
        Write("beir/corpus.jsonl", "{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"doc one\"}\n{\"_id\": 2, \"text\": \"doc two\"}\n");
        Write("beir/queries.jsonl", "{\"_id\": \"q1\", \"text\": \"query\"}\n");
        Write("beir/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t2\t0\n");
        Write("beir/qrels/dev.tsv", "query-id\tcorpus-id\tscore\nq1\t2\t1\n");
        var task = (RetrievalTask)BuiltInTasks.Create("retrieval:beir", _dir);
        Assert.Equal("beir", task.Name);
        Assert.Equal(["dev", "test"], task.Splits);
        Assert.Equal(2, task.Data.QrelsBySplit["test"]["q1"]["d1"]);
        Assert.Equal("2", task.Data.Corpus[1].Id);
        Assert.Equal("", task.Data.Corpus[1].Title);

        Write("beir/qrels/train.tsv", "query-id\tcorpus-id\tscore\nq1\td1\tmany\n");
        var e = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("retrieval:beir", _dir));
        Assert.Contains("train.tsv:2:", e.Message);

        Write("beir2/corpus.jsonl", "{\"_id\": \"d1\", \"text\": \"x\"}\n{not json}\n");
        Write("beir2/queries.jsonl", "{\"_id\": \"q1\", \"text\": \"query\"}\n");
        Write("beir2/qrels/test.tsv", "q1\td1\t1\n");
        var e2 = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("retrieval:beir2", _dir));
        Assert.Contains("corpus.jsonl:2:", e2.Message);
    }

    [Fact]
    public void GenericTablesByExtensionAndSplitName()
    {
        Write("mysts/train.tsv", "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\n");
        Write("mysts/test.jsonl", "{\"sentence1\": \"e\", \"sentence2\": \"f\", \"score\": 0.5}\n{\"sentence1\": \"g\", \"sentence2\": \"h\", \"score\": 4}\n");
        var sts = (StsTask)BuiltInTasks.Create("sts:mysts", _dir);
        Assert.Equal("mysts", sts.Name);
        Assert.Equal(["train", "test"], sts.Splits);
        Assert.Equal(new StsPair("e", "f", 0.5), sts.Pairs("test")[0]);

        Write("biosses/test.csv", "sentence1,sentence2,score\n\"a, b\",c,2.5\nd,e,1\n");
        var bio = (StsTask)BuiltInTasks.Create("BIOSSES", _dir);
        Assert.Equal(new StsPair("a, b", "c", 2.5), bio.Pairs("test")[0]);

        Write("pairs.csv", "sentence1,sentence2,label\na,b,1\nc,d,0\n");
        Assert.Equal(TaskType.PairClassification, BuiltInTasks.Create("pair:pairs.csv", _dir).Type);

        Write("rerank/test.jsonl", "{\"query\": \"q\", \"positive\": [\"p\"], \"negative\": [\"n1\", \"n2\"]}\n{\"query\": \"r\", \"positive\": \"p\", \"negatives\": [\"n\"]}\n");
        Assert.Equal(["test"], BuiltInTasks.Create("reranking:rerank", _dir).Splits);

        var unknown = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("NoSuchTask", _dir));
        Assert.Contains("STSBenchmark", unknown.Message);
        var badType = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("regression:mysts", _dir));
        Assert.Contains("unknown task type", badType.Message);
    }

    [Fact]
    public void MissingFilesAreClearErrors()
    {
        var e = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("STSBenchmark", _dir));
        Assert.Contains("STSBenchmark", e.Message);
        Assert.Contains("sts-", e.Message);
        var e2 = Assert.Throws<UllmeException>(() => BuiltInTasks.Create("STSBenchmark", Path.Combine(_dir, "nope")));
        Assert.Contains("data directory not found", e2.Message);
    }

    [AssetFact]
    public void SharedDataLoadsWithExpectedSizes()
    {
        string data = Assets.Path("data");
        Assert.Equal(1500, ((StsTask)BuiltInTasks.Create("STSBenchmark", data)).Pairs("validation").Count);
        Assert.Equal(5749, ((StsTask)BuiltInTasks.Create("STSBenchmark", data)).Pairs("train").Count);
        var sick = (StsTask)BuiltInTasks.Create("SICK-R", data);
        Assert.Equal(4500, sick.Pairs("train").Count);
        Assert.Equal(500, sick.Pairs("validation").Count);
        Assert.Equal(750 + 561, ((StsTask)BuiltInTasks.Create("STS13", data)).Pairs("test").Count);
        var sci = (RetrievalTask)BuiltInTasks.Create("SciFact", data);
        Assert.Equal(5183, sci.Data.Corpus.Count);
        Assert.Equal(809, sci.Data.QrelsBySplit["train"].Count);
        Assert.Equal(919, sci.Data.QrelsBySplit["train"].Values.Sum(d => d.Count)); // BEIR's train qrels
        Assert.Equal(["train"], BuiltInTasks.Create("MRPC", data).Splits);
        Assert.True(((ClassificationTask)BuiltInTasks.Create("Banking77Classification", data)).IsCrossValidation);
        Assert.Equal(["validation"], BuiltInTasks.Create("SNLIReranking", data).Splits);
    }
}
