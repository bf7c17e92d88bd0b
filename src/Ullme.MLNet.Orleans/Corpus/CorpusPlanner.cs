using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Orleans.Corpus;

/// <summary>
/// Splits a job's inputs into work items of at most <c>shardRows</c> data rows each, never across two files. Rows
/// are those <c>ullme embed</c> reads from the same file: .txt every line (empty ones too; a final newline adds
/// none), JSONL every line that is not blank, CSV (RFC 4180) and TSV every non-blank record after the header.
/// Text formats are scanned once, sequentially, without decoding or parsing what they need not (no JSON parse), to
/// record where each item's first row starts (byte and line); Parquet items are row ranges.
/// </summary>
internal static class CorpusPlanner
{
    /// <summary>The work items of <paramref name="files"/>, indexed 0.. across all of them, in file order. Columns
    /// are checked here (a CSV/TSV header, a Parquet schema) so a job with a wrong column fails before it starts.</summary>
    public static List<WorkItem> Plan(IReadOnlyList<string> files, string textColumn, string? idColumn, int shardRows,
        CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(files);
        ArgumentException.ThrowIfNullOrWhiteSpace(textColumn);
        ArgumentOutOfRangeException.ThrowIfLessThan(shardRows, 1);
        if (idColumn is not null && string.IsNullOrWhiteSpace(idColumn)) throw new UllmeException("The id column name is empty.");
        var full = files.Select(Path.GetFullPath).ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string f in full)
            if (!seen.Add(f)) throw new UllmeException($"Input '{f}' is listed twice.");
        var nameCounts = full.GroupBy(f => Path.GetFileName(f), StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);

        var items = new List<WorkItem>();
        foreach (string file in full)
        {
            ct.ThrowIfCancellationRequested();
            if (!File.Exists(file)) throw new UllmeException($"Input file '{file}' does not exist.");
            var format = CorpusFormats.Of(file);
            string prefix = nameCounts[Path.GetFileName(file)] == 1 ? Path.GetFileName(file) : file;
            if (format == CorpusFormat.Parquet)
            {
                long total = ParquetInput.CountRows(file, textColumn, idColumn, ct);
                for (long start = 0; start < total; start += shardRows)
                    items.Add(new WorkItem(items.Count, file, start, (int)Math.Min(shardRows, total - start), -1, -1, prefix));
                continue;
            }
            var starts = new List<(long Offset, long Line)>();
            long rows = format switch
            {
                CorpusFormat.Text or CorpusFormat.Jsonl => ScanLines(file, format == CorpusFormat.Jsonl, idColumn, shardRows, starts, ct),
                CorpusFormat.Csv => ScanCsv(file, textColumn, idColumn, shardRows, starts, ct),
                _ => ScanTsv(file, textColumn, idColumn, shardRows, starts, ct),
            };
            for (int k = 0; k < starts.Count; k++)
            {
                long first = (long)k * shardRows;
                items.Add(new WorkItem(items.Count, file, first, (int)Math.Min(shardRows, rows - first), starts[k].Offset, starts[k].Line, prefix));
            }
        }
        return items;
    }

    private static long ScanLines(string file, bool jsonl, string? idColumn, int shardRows, List<(long, long)> starts, CancellationToken ct)
    {
        if (!jsonl && idColumn is not null)
            throw new UllmeException($"{file}: a .txt file has no columns, so no id column '{idColumn}'; use JSONL, CSV, TSV or Parquet for ids.");
        using var c = new ByteCursor(file, ct);
        c.SkipBom();
        var blank = jsonl ? new BlankLineCheck() : null;
        long rows = 0, line = 0;
        while (TextLines.Next(c, null, blank, out long start, out bool isBlank))
        {
            line++;
            if (isBlank) continue;
            if (rows % shardRows == 0) starts.Add((start, line));
            rows++;
        }
        return rows;
    }

    private static long ScanCsv(string file, string textColumn, string? idColumn, int shardRows, List<(long, long)> starts, CancellationToken ct)
    {
        using var c = new ByteCursor(file, ct);
        c.SkipBom();
        var records = new CsvRecords(c, (byte)',');
        var header = new List<string>();
        if (!records.Next(header, out _, out _)) return 0;
        CheckHeader(file, header, textColumn, idColumn);
        long rows = 0;
        while (records.Next(null, out long start, out long line))
        {
            if (rows % shardRows == 0) starts.Add((start, line));
            rows++;
        }
        return rows;
    }

    private static long ScanTsv(string file, string textColumn, string? idColumn, int shardRows, List<(long, long)> starts, CancellationToken ct)
    {
        using var c = new ByteCursor(file, ct);
        c.SkipBom();
        var records = new TsvRecords(c);
        var text = new Utf8Collector();
        if (!records.Next(text, out _, out _)) return 0;
        CheckHeader(file, text.TakeString().Split('\t'), textColumn, idColumn);
        long rows = 0;
        while (records.Next(null, out long start, out long line))
        {
            if (rows % shardRows == 0) starts.Add((start, line));
            rows++;
        }
        return rows;
    }

    private static void CheckHeader(string file, IReadOnlyList<string> header, string textColumn, string? idColumn)
    {
        CorpusColumns.Find(file, header, textColumn, "text");
        if (idColumn is not null) CorpusColumns.Find(file, header, idColumn, "id");
    }
}
