using System.Globalization;
using System.Text;

namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>
/// SciFact as CSV exports of the original release: <c>corpus_train.csv</c> (doc_id, title, abstract, structured;
/// the abstract is a Python/NumPy list literal of quoted sentences) and <c>claims_&lt;split&gt;.csv</c> (id, claim,
/// evidence_doc_id, evidence_label, evidence_sentences, cited_doc_ids; one row per evidence document). Documents
/// are title + the abstract sentences joined by spaces; a claim's relevant documents are its <c>cited_doc_ids</c>
/// (grade 1) -- exactly BEIR's SciFact qrels (809 train claims, 919 judgments). Claim files map to splits as BEIR
/// does: claims_train -> train, claims_dev / claims_validation -> test (BEIR's and MTEB's SciFact test set is the
/// original dev set).
/// </summary>
public static class SciFactCsvFormat
{
    public static IReadOnlyList<(string File, string Split)> ClaimFiles { get; } =
        [("claims_train.csv", "train"), ("claims_dev.csv", "test"), ("claims_validation.csv", "test")];

    public static bool IsSciFactCsvFolder(string folder) =>
        DataFiles.FindFile(folder, "corpus_train.csv") is not null || DataFiles.FindFile(folder, "corpus.csv") is not null;

    public static RetrievalData Read(string folder)
    {
        string corpusPath = DataFiles.FindFile(folder, "corpus_train.csv") ?? DataFiles.FindFile(folder, "corpus.csv")
            ?? throw new UllmeException($"SciFact corpus: file not found: {Path.Combine(folder, "corpus_train.csv")}");
        var corpus = ReadCorpus(corpusPath);

        var queries = new Dictionary<string, RetrievalQuery>(StringComparer.Ordinal);
        var bySplit = new Dictionary<string, Dictionary<string, Dictionary<string, int>>>();
        foreach (var (file, split) in ClaimFiles)
        {
            string? path = DataFiles.FindFile(folder, file);
            if (path is null) continue;
            if (bySplit.ContainsKey(split))
                throw new UllmeException($"{folder}: both claims_dev.csv and claims_validation.csv present; keep one (both map to split '{split}')");
            bySplit[split] = ReadClaims(path, queries);
        }
        if (bySplit.Count == 0)
            throw new UllmeException($"{folder}: no claim files (claims_train.csv, claims_dev.csv or claims_validation.csv)");
        return new RetrievalData(corpus, queries.Values.ToList(), bySplit);
    }

    public static List<CorpusDocument> ReadCorpus(string path)
    {
        var docs = new List<CorpusDocument>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        int id = -1, title = -1, abs = -1;
        bool header = true;
        foreach (var (line, f) in DataFiles.ReadCsv(path))
        {
            if (header)
            {
                header = false;
                id = Array.IndexOf(f, "doc_id");
                title = Array.IndexOf(f, "title");
                abs = Array.IndexOf(f, "abstract");
                if (id < 0 || title < 0 || abs < 0) throw DataFiles.Error(path, line, "header must name doc_id, title and abstract");
                continue;
            }
            int need = Math.Max(id, Math.Max(title, abs)) + 1;
            if (f.Length < need) throw DataFiles.Error(path, line, $"expected at least {need} fields, found {f.Length}");
            string docId = f[id].Trim();
            if (!seen.Add(docId)) throw DataFiles.Error(path, line, $"duplicate doc_id '{docId}'");
            List<string> sentences;
            try { sentences = PythonLiteral.ParseStringList(f[abs]); }
            catch (FormatException e) { throw DataFiles.Error(path, line, $"abstract is not a list of quoted strings ({e.Message})"); }
            docs.Add(new CorpusDocument(docId, f[title], string.Join(' ', sentences)));
        }
        if (docs.Count == 0) throw new UllmeException($"{path}: no documents");
        return docs;
    }

    private static Dictionary<string, Dictionary<string, int>> ReadClaims(string path, Dictionary<string, RetrievalQuery> queries)
    {
        var qrels = new Dictionary<string, Dictionary<string, int>>(StringComparer.Ordinal);
        foreach (var (qid, claim, cited) in ReadClaimRows(path))
        {
            queries.TryAdd(qid, new RetrievalQuery(qid, claim));
            if (!qrels.TryGetValue(qid, out var docs)) qrels[qid] = docs = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var d in cited) docs[d.ToString(CultureInfo.InvariantCulture)] = 1;
        }
        return qrels;
    }

    /// <summary>The rows of a claims file in order: (id, claim, cited_doc_ids); a claim spans one row per evidence document.</summary>
    public static IEnumerable<(string Id, string Claim, List<long> Cited)> ReadClaimRows(string path)
    {
        int id = -1, claim = -1, cited = -1;
        bool header = true;
        foreach (var (line, f) in DataFiles.ReadCsv(path))
        {
            if (header)
            {
                header = false;
                id = Array.IndexOf(f, "id");
                claim = Array.IndexOf(f, "claim");
                cited = Array.IndexOf(f, "cited_doc_ids");
                if (id < 0 || claim < 0 || cited < 0) throw DataFiles.Error(path, line, "header must name id, claim and cited_doc_ids");
                continue;
            }
            int need = Math.Max(id, Math.Max(claim, cited)) + 1;
            if (f.Length < need) throw DataFiles.Error(path, line, $"expected at least {need} fields, found {f.Length}");
            List<long> docIds;
            try { docIds = PythonLiteral.ParseIntList(f[cited]); }
            catch (FormatException e) { throw DataFiles.Error(path, line, $"cited_doc_ids is not a list of integers ({e.Message})"); }
            yield return (f[id].Trim(), f[claim], docIds);
        }
    }
}

/// <summary>
/// Parses the list literals found in CSV exports made with pandas: Python lists (<c>['a', "b"]</c>) and NumPy array
/// reprs (<c>['a'\n 'b']</c>, <c>[1 2 3]</c>), with Python string escapes.
/// </summary>
internal static class PythonLiteral
{
    public static List<string> ParseStringList(string text)
    {
        var s = text.Trim();
        if (s.Length < 2 || s[0] != '[' || s[^1] != ']') throw new FormatException("expected '[' ... ']'");
        var items = new List<string>();
        int i = 1, end = s.Length - 1;
        while (true)
        {
            while (i < end && (char.IsWhiteSpace(s[i]) || s[i] == ',')) i++;
            if (i >= end) break;
            char q = s[i];
            if (q != '\'' && q != '"') throw new FormatException($"expected a quoted string at position {i}");
            i++;
            var sb = new StringBuilder();
            while (true)
            {
                if (i >= end) throw new FormatException("unterminated string");
                char c = s[i];
                if (c == q) { i++; break; }
                if (c != '\\') { sb.Append(c); i++; continue; }
                if (i + 1 >= end) throw new FormatException("dangling backslash");
                char e = s[i + 1];
                i += 2;
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case '\\': sb.Append('\\'); break;
                    case '\'': sb.Append('\''); break;
                    case '"': sb.Append('"'); break;
                    case 'x': sb.Append((char)Hex(s, ref i, 2, end)); break;
                    case 'u': sb.Append((char)Hex(s, ref i, 4, end)); break;
                    case 'U': sb.Append(char.ConvertFromUtf32(Hex(s, ref i, 8, end))); break;
                    case '\n': break; // line continuation
                    default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes
                }
            }
            items.Add(sb.ToString());
        }
        return items;
    }

    public static List<long> ParseIntList(string text)
    {
        var s = text.Trim();
        if (s.Length < 2 || s[0] != '[' || s[^1] != ']') throw new FormatException("expected '[' ... ']'");
        var items = new List<long>();
        foreach (var part in s[1..^1].Split([' ', ',', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries))
        {
            if (!long.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v))
                throw new FormatException($"'{part}' is not an integer");
            items.Add(v);
        }
        return items;
    }

    private static int Hex(string s, ref int i, int digits, int end)
    {
        if (i + digits > end) throw new FormatException("truncated escape");
        int v = int.Parse(s.AsSpan(i, digits), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        i += digits;
        return v;
    }
}
