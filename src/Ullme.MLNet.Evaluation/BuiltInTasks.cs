using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Tasks;

namespace Ullme.MLNet.Evaluation;

/// <summary>
/// The named tasks (MTEB names) and generic task specs that read standard files from a data directory.
/// A built-in task looks for its folder under the data directory (e.g. <c>stsbenchmark/</c>; names are matched
/// case-insensitively, see <see cref="Folders"/>), or uses the data directory itself when the files are there.
/// Each file present becomes a split (the mapping is in docs/evaluation.md). A generic spec is
/// <c>&lt;type&gt;:&lt;path&gt;</c> with type sts, classification, clustering, pairclassification, retrieval or reranking.
/// Creating a task reads and validates its files; a missing or malformed file throws <see cref="UllmeException"/>
/// naming the file and line.
/// </summary>
public static class BuiltInTasks
{
    private sealed record Entry(string Name, TaskType Type, string[] Folders, string Revision, string? Instruction,
        Func<string, Entry, EvaluationTask> Create);

    private const string StsInstruction = "Retrieve semantically similar text.";

    private static readonly Entry[] Entries =
    [
        new("STSBenchmark", TaskType.STS, ["stsbenchmark", "STSBenchmark", "stsb", "sts-b"],
            "b0fddb56ed78048fa8b90373c8a3cfc37b684831", StsInstruction, CreateStsBenchmark),
        new("SICK-R", TaskType.STS, ["sick", "SICK-R", "sickr", "sick-r"],
            "20a6d6f312dd54037fe07a32d58e5e168867909d", StsInstruction, CreateSick),
        SemEval("STS12", "sts12", "a0d554a64d88156834ff5ae9920b964011b16384"),
        SemEval("STS13", "sts13", "7e90230a92c190f1bf69ae9002b8cea547a64cca"),
        SemEval("STS14", "sts14", "6031580fec1f6af667f0bd2da0a551cf4f0b2375"),
        SemEval("STS15", "sts15", "ae752c7c21bf194d8b67fd573edf7ae58183cbe3"),
        SemEval("STS16", "sts16", "4d8694f8f0e0100860b497b999b3dbed754a0513"),
        new("BIOSSES", TaskType.STS, ["biosses", "BIOSSES"], "d3fb88f8f02e40887cd149695127462bbcf29b4a",
            StsInstruction, (dir, e) => Init(new StsTask(e.Name, ReadSplits(dir, TableFormat.ReadSts)), e, dir)),
        new("Banking77Classification", TaskType.Classification, ["banking77", "Banking77Classification"],
            "0fd18e25b25c072e09e0d92ab615fda904d66300", "Given a online banking query, find the corresponding intents",
            (dir, e) => Init(Classification(e.Name, dir), e, dir)),
        new("Banking77Clustering", TaskType.Clustering, ["banking77", "Banking77Clustering"],
            "no_revision_available", "Identify the intent of online banking queries",
            (dir, e) => Init(new ClusteringTask(e.Name, ReadSplits(dir, TableFormat.ReadLabeled)), e, dir)),
        new("SciFact", TaskType.Retrieval, ["scifact", "SciFact"], "d56462d0e63a25450459c4f213e49ffdb866f7f9",
            "Given a scientific claim, retrieve documents that support or refute the claim", CreateSciFact),
        new("MRPC", TaskType.PairClassification, ["mrpc", "MRPC"], "no_revision_available",
            "Retrieve text that is a paraphrase of the given sentence", CreateMrpc),
        new("SciFactReranking", TaskType.Reranking, ["scifact", "SciFact"], "no_revision_available",
            "Given a scientific claim, retrieve documents that support or refute the claim", CreateSciFactReranking),
        new("SNLIReranking", TaskType.Reranking, ["snli", "SNLI"], "no_revision_available",
            "Given a premise, retrieve a hypothesis that is entailed by the premise", CreateSnliReranking),
    ];

    /// <summary>Names of the built-in tasks.</summary>
    public static IReadOnlyList<string> Names { get; } = Entries.Select(e => e.Name).ToArray();

    /// <summary>Folder names a built-in task looks for under the data directory.</summary>
    public static IReadOnlyList<string> Folders(string task) => Find(task).Folders;

    /// <summary>Type of a built-in task.</summary>
    public static TaskType TypeOf(string task) => Find(task).Type;

    /// <summary>Default instruction of a built-in task (used by instruction-following models).</summary>
    public static string? InstructionOf(string task) => Find(task).Instruction;

    /// <summary>
    /// Creates a task from a built-in name (case-insensitive) or a generic spec <c>type:path</c> (a relative path
    /// is resolved against <paramref name="dataDir"/>).
    /// </summary>
    public static EvaluationTask Create(string nameOrSpec, string dataDir)
    {
        if (string.IsNullOrWhiteSpace(nameOrSpec)) throw new UllmeException("empty task name");
        int colon = nameOrSpec.IndexOf(':');
        if (colon > 1) return CreateGeneric(nameOrSpec[..colon], nameOrSpec[(colon + 1)..], dataDir);
        var entry = Entries.FirstOrDefault(e => string.Equals(e.Name, nameOrSpec, StringComparison.OrdinalIgnoreCase))
            ?? throw new UllmeException($"unknown task '{nameOrSpec}'; built-in tasks: {string.Join(", ", Names)}; " +
                                        "or a generic spec <sts|classification|clustering|pairclassification|retrieval|reranking>:<path>");
        if (!Directory.Exists(dataDir)) throw new UllmeException($"data directory not found: {dataDir}");
        string folder = DataFiles.FindSubfolder(dataDir, entry.Folders) ?? dataDir;
        try
        {
            return entry.Create(folder, entry);
        }
        catch (UllmeException e) when (folder == dataDir)
        {
            throw new UllmeException($"task {entry.Name}: no data folder ({string.Join(", ", entry.Folders)}) under {dataDir}, " +
                                     $"and the folder itself does not hold the task's files: {e.Message}", e);
        }
    }

    /// <summary>Creates several tasks; all files are read and checked before anything runs.</summary>
    public static IReadOnlyList<EvaluationTask> Create(IEnumerable<string> namesOrSpecs, string dataDir) =>
        namesOrSpecs.Select(n => Create(n.Trim(), dataDir)).ToArray();

    /// <summary>A generic task: <paramref name="type"/> is sts, classification, clustering, pairclassification
    /// (or pair), retrieval (a BEIR folder, or a SciFact-style CSV folder) or reranking (a JSONL file or a folder
    /// of split files). The task is named after the file or folder.</summary>
    public static EvaluationTask CreateGeneric(string type, string path, string dataDir)
    {
        string full = Path.IsPathRooted(path) ? path : Path.Combine(dataDir, path);
        if (!File.Exists(full) && !Directory.Exists(full)) throw new UllmeException($"task data not found: {full}");
        string name = Path.GetFileNameWithoutExtension(full.TrimEnd('/', '\\'));
        if (File.Exists(full) && TableFormat.SplitOf(full) is not null)
            name = Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(full))!) ?? name;
        EvaluationTask task = type.Trim().ToLowerInvariant() switch
        {
            "sts" => new StsTask(name, ReadSplits(full, TableFormat.ReadSts)),
            "classification" => Classification(name, full),
            "clustering" => new ClusteringTask(name, ReadSplits(full, TableFormat.ReadLabeled)),
            "pairclassification" or "pair" => new PairClassificationTask(name, ReadSplits(full, TableFormat.ReadPairs)),
            "retrieval" => new RetrievalTask(name, ReadRetrieval(full)),
            "reranking" => new RerankingTask(name, ReadRerankingSplits(full)),
            _ => throw new UllmeException($"unknown task type '{type}' in '{type}:{path}' (use sts, classification, clustering, pairclassification, retrieval or reranking)"),
        };
        return task;
    }

    private static Entry Find(string task) =>
        Entries.FirstOrDefault(e => string.Equals(e.Name, task, StringComparison.OrdinalIgnoreCase))
        ?? throw new UllmeException($"unknown task '{task}'; built-in tasks: {string.Join(", ", Names)}");

    private static Entry SemEval(string name, string folder, string revision) =>
        new(name, TaskType.STS, [folder, name, folder.Replace("sts", "sts20", StringComparison.Ordinal), "STS20" + name[3..]],
            revision, StsInstruction,
            (dir, e) => Init(new StsTask(e.Name, new Dictionary<string, IReadOnlyList<StsPair>> { ["test"] = SemEvalStsFormat.ReadFolder(dir) }), e, dir));

    private static EvaluationTask Init(EvaluationTask task, Entry e, string dir)
    {
        task.DatasetRevision = e.Revision;
        task.DefaultInstruction = e.Instruction;
        task.Source = dir;
        return task;
    }

    private static EvaluationTask CreateStsBenchmark(string dir, Entry e)
    {
        var splits = new Dictionary<string, IReadOnlyList<StsPair>>();
        foreach (var (file, split) in StsBenchmarkFormat.Files)
            if (DataFiles.FindFile(dir, file) is string path) splits[split] = StsBenchmarkFormat.Read(path);
        if (splits.Count == 0) throw new UllmeException($"{dir}: no STS Benchmark files (sts-train.csv, sts-dev.csv, sts-test.csv)");
        return Init(new StsTask(e.Name, splits), e, dir);
    }

    /// <summary>
    /// SICK files map to train / validation (trial) / test. MTEB's SICK-R test set is all 9,927 SICK pairs
    /// (train + trial + test), so when SICK_test_annotated.txt is present the "test" split is that concatenation.
    /// </summary>
    private static EvaluationTask CreateSick(string dir, Entry e)
    {
        var read = new Dictionary<string, List<StsPair>>();
        foreach (var (file, split) in SickFormat.Files)
            if (DataFiles.FindFile(dir, file) is string path) read[split] = SickFormat.Read(path);
        if (read.Count == 0) throw new UllmeException($"{dir}: no SICK files (SICK_train.txt, SICK_trial.txt, SICK_test_annotated.txt)");
        var splits = new Dictionary<string, IReadOnlyList<StsPair>>();
        foreach (var (split, pairs) in read) splits[split] = pairs;
        if (read.ContainsKey("test"))
            splits["test"] = read.OrderBy(kv => Array.IndexOf(["train", "validation", "test"], kv.Key)).SelectMany(kv => kv.Value).ToList();
        return Init(new StsTask(e.Name, splits), e, dir);
    }

    private static EvaluationTask CreateSciFact(string dir, Entry e)
    {
        RetrievalData data = BeirFormat.IsBeirFolder(dir) ? BeirFormat.Read(dir)
            : SciFactCsvFormat.IsSciFactCsvFolder(dir) ? SciFactCsvFormat.Read(dir)
            : throw new UllmeException($"{dir}: no SciFact data (BEIR corpus.jsonl + queries.jsonl + qrels/, or corpus_train.csv + claims_*.csv)");
        return Init(new RetrievalTask(e.Name, data), e, dir);
    }

    private static EvaluationTask CreateMrpc(string dir, Entry e)
    {
        var splits = new Dictionary<string, IReadOnlyList<LabeledPair>>();
        foreach (var (file, split) in MrpcFormat.Files)
            if (DataFiles.FindFile(dir, file) is string path) splits[split] = MrpcFormat.Read(path);
        if (splits.Count == 0) throw new UllmeException($"{dir}: no MRPC files (msr_paraphrase_train.txt, msr_paraphrase_test.txt)");
        return Init(new PairClassificationTask(e.Name, splits), e, dir);
    }

    /// <summary>SciFact train claims with cited (positive) vs BM25-retrieved-not-cited (negative) abstracts, split "train"
    /// (see <see cref="SciFactReranking"/>).</summary>
    private static EvaluationTask CreateSciFactReranking(string dir, Entry e) =>
        Init(new RerankingTask(e.Name, new Dictionary<string, IReadOnlyList<RerankingSample>> { ["train"] = SciFactReranking.Build(dir) }), e, dir);

    private static EvaluationTask CreateSnliReranking(string dir, Entry e)
    {
        string path = DataFiles.FindFile(dir, "triplets.jsonl") ?? throw new UllmeException($"{dir}: file not found: triplets.jsonl");
        return Init(new RerankingTask(e.Name, new Dictionary<string, IReadOnlyList<RerankingSample>> { ["validation"] = RerankingFormat.Read(path) }), e, dir);
    }

    /// <summary>train + other splits: train on train, evaluate the others; a single split: cross-validation.</summary>
    private static ClassificationTask Classification(string name, string path)
    {
        var splits = ReadSplits(path, TableFormat.ReadLabeled);
        if (splits.Count == 1)
        {
            var (only, rows) = splits.First();
            return new ClassificationTask(name, only, rows);
        }
        if (!splits.TryGetValue("train", out var train))
            throw new UllmeException($"{path}: classification needs a train split file (train.csv/.tsv/.jsonl) next to {string.Join(", ", splits.Keys)}");
        return new ClassificationTask(name, train, splits.Where(kv => kv.Key != "train").ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    private static Dictionary<string, IReadOnlyList<T>> ReadSplits<T>(string path, Func<string, List<T>> read)
    {
        var splits = new Dictionary<string, IReadOnlyList<T>>();
        foreach (var (split, file) in TableFormat.SplitFiles(path)) splits[split] = read(file);
        return splits;
    }

    private static RetrievalData ReadRetrieval(string path)
    {
        if (BeirFormat.IsBeirFolder(path)) return BeirFormat.Read(path);
        if (Directory.Exists(path) && SciFactCsvFormat.IsSciFactCsvFolder(path)) return SciFactCsvFormat.Read(path);
        throw new UllmeException($"{path}: not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)");
    }

    private static Dictionary<string, IReadOnlyList<RerankingSample>> ReadRerankingSplits(string path)
    {
        if (File.Exists(path))
            return new() { [TableFormat.SplitOf(path) ?? "test"] = RerankingFormat.Read(path) };
        var files = Directory.GetFiles(path, "*.jsonl").Where(f => TableFormat.SplitOf(f) is not null).ToArray();
        if (files.Length == 0) throw new UllmeException($"{path}: no reranking split files (train/validation/dev/test.jsonl)");
        return files.ToDictionary(f => TableFormat.SplitOf(f)!, f => (IReadOnlyList<RerankingSample>)RerankingFormat.Read(f));
    }
}
