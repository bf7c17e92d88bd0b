using System.Text.Json;
using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Orleans.Corpus;

/// <summary>One row of a corpus: its id (from the id column, else <c>{IdPrefix}:{data row + 1}</c>) and its text.</summary>
internal readonly record struct CorpusRow(string Id, string Text);

/// <summary>
/// Reads the rows of a work item (<see cref="CorpusPlanner"/>): a text file from the item's byte offset, exactly
/// its row count, with the row rules of <c>ullme embed</c>; UTF-8 with invalid sequences replaced by U+FFFD. JSONL
/// rows are objects with a string field named by the text column; ids come from the id column when one is named
/// (JSONL: a string or a number, numbers as their JSON text). Errors name the file and the line (Parquet: the row).
/// </summary>
internal static class CorpusReader
{
    /// <summary>The <see cref="WorkItem.Rows"/> rows of <paramref name="item"/>; a file that ends first (it
    /// changed since planning) is a <see cref="UllmeException"/>.</summary>
    public static List<CorpusRow> Read(WorkItem item, string textColumn, string? idColumn, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(item);
        if (!File.Exists(item.File)) throw new UllmeException($"Input file '{item.File}' does not exist (it was there when the job was planned).");
        var format = CorpusFormats.Of(item.File);
        var rows = format == CorpusFormat.Parquet
            ? ParquetInput.Read(item.File, item.StartRow, item.Rows, textColumn, idColumn, item.IdPrefix, ct)
            : ReadText(item.File, format, item.ByteOffset, item.StartLine, item.StartRow, item.Rows, textColumn, idColumn, item.IdPrefix, ct).ToList();
        if (rows.Count < item.Rows)
            throw new UllmeException($"{item.File}: the file ends after {rows.Count} of the {item.Rows} rows of work item {item.Index} " +
                $"(data rows {item.StartRow + 1} to {item.StartRow + item.Rows}); it changed since the job was planned.");
        return rows;
    }

    /// <summary>Every row of <paramref name="file"/>, as they are read.</summary>
    public static IEnumerable<CorpusRow> ReadAll(string file, string textColumn, string? idColumn, string idPrefix, CancellationToken ct = default)
    {
        if (!File.Exists(file)) throw new UllmeException($"Input file '{file}' does not exist.");
        var format = CorpusFormats.Of(file);
        return format == CorpusFormat.Parquet
            ? ParquetInput.Read(file, 0, long.MaxValue / 2, textColumn, idColumn, idPrefix, ct)
            : ReadText(file, format, -1, 1, 0, long.MaxValue, textColumn, idColumn, idPrefix, ct);
    }

    /// <summary>Up to <paramref name="maxRows"/> rows from <paramref name="offset"/> (that of data row
    /// <paramref name="startRow"/>, on line <paramref name="startLine"/>); an offset ≤ 0 reads from the start.</summary>
    private static IEnumerable<CorpusRow> ReadText(string file, CorpusFormat format, long offset, long startLine, long startRow,
        long maxRows, string textColumn, string? idColumn, string idPrefix, CancellationToken ct)
    {
        return format switch
        {
            CorpusFormat.Text => ReadTxt(file, offset, startRow, maxRows, idColumn, idPrefix, ct),
            CorpusFormat.Jsonl => ReadJsonl(file, offset, startLine, startRow, maxRows, textColumn, idColumn, idPrefix, ct),
            CorpusFormat.Csv => ReadCsv(file, offset, startLine, startRow, maxRows, textColumn, idColumn, idPrefix, ct),
            _ => ReadTsv(file, offset, startLine, startRow, maxRows, textColumn, idColumn, idPrefix, ct),
        };
    }

    private static ByteCursor Open(string file, long offset, CancellationToken ct)
    {
        var c = new ByteCursor(file, ct);
        try
        {
            if (offset <= 0) c.SkipBom();
            else c.Seek(offset);
            return c;
        }
        catch
        {
            c.Dispose();
            throw;
        }
    }

    private static IEnumerable<CorpusRow> ReadTxt(string file, long offset, long startRow, long maxRows, string? idColumn,
        string idPrefix, CancellationToken ct)
    {
        if (idColumn is not null)
            throw new UllmeException($"{file}: a .txt file has no columns, so no id column '{idColumn}'.");
        using var c = Open(file, offset, ct);
        var text = new Utf8Collector();
        for (long n = 0; n < maxRows && TextLines.Next(c, text, null, out _, out _); n++)
            yield return new CorpusRow($"{idPrefix}:{startRow + n + 1}", TextLines.TrimCr(text.TakeString()));
    }

    private static IEnumerable<CorpusRow> ReadJsonl(string file, long offset, long startLine, long startRow, long maxRows,
        string textColumn, string? idColumn, string idPrefix, CancellationToken ct)
    {
        using var c = Open(file, offset, ct);
        var bytes = new Utf8Collector();
        long line = (offset <= 0 ? 1 : startLine) - 1, n = 0;
        while (n < maxRows && TextLines.Next(c, bytes, null, out _, out _))
        {
            line++;
            string s = TextLines.TrimCr(bytes.TakeString());
            if (string.IsNullOrWhiteSpace(s)) continue;
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(s);
            }
            catch (JsonException e)
            {
                throw new UllmeException($"{file}:{line}: not valid JSON ({e.Message})");
            }
            using (doc)
            {
                var o = doc.RootElement;
                if (o.ValueKind != JsonValueKind.Object) throw new UllmeException($"{file}:{line}: expected a JSON object.");
                if (textColumn != "input_ids" && o.TryGetProperty("input_ids", out _))
                    throw new UllmeException($"{file}:{line}: pre-tokenized rows (\"input_ids\") are not supported by the cluster; give the text in \"{textColumn}\".");
                if (!o.TryGetProperty(textColumn, out var t) || t.ValueKind != JsonValueKind.String)
                    throw new UllmeException($"{file}:{line}: expected {{\"{textColumn}\": \"...\"}} (a string field \"{textColumn}\").");
                string id = idColumn is null ? $"{idPrefix}:{startRow + n + 1}" : JsonId(o, idColumn, file, line);
                yield return new CorpusRow(id, t.GetString()!);
            }
            n++;
        }
    }

    private static string JsonId(JsonElement o, string idColumn, string file, long line)
    {
        if (!o.TryGetProperty(idColumn, out var v)) throw new UllmeException($"{file}:{line}: no id field \"{idColumn}\".");
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString()!,
            JsonValueKind.Number => v.GetRawText(),
            JsonValueKind.Null => throw new UllmeException($"{file}:{line}: the id field \"{idColumn}\" is null."),
            _ => throw new UllmeException($"{file}:{line}: the id field \"{idColumn}\" must be a string or a number (it is {v.ValueKind.ToString().ToLowerInvariant()})."),
        };
    }

    private static IEnumerable<CorpusRow> ReadCsv(string file, long offset, long startLine, long startRow, long maxRows,
        string textColumn, string? idColumn, string idPrefix, CancellationToken ct)
    {
        using var c = Open(file, 0, ct);
        var records = new CsvRecords(c, (byte)',');
        var fields = new List<string>();
        if (!records.Next(fields, out _, out _)) yield break;
        int col = CorpusColumns.Find(file, fields, textColumn, "text");
        int idCol = idColumn is null ? -1 : CorpusColumns.Find(file, fields, idColumn, "id");
        if (offset > 0)
        {
            c.Seek(offset);
            records.Line = startLine;
        }
        for (long n = 0; n < maxRows && records.Next(fields, out _, out long line); n++)
            yield return Row(file, line, fields, col, textColumn, idCol, idColumn, idPrefix, startRow + n);
    }

    private static IEnumerable<CorpusRow> ReadTsv(string file, long offset, long startLine, long startRow, long maxRows,
        string textColumn, string? idColumn, string idPrefix, CancellationToken ct)
    {
        using var c = Open(file, 0, ct);
        var records = new TsvRecords(c);
        var text = new Utf8Collector();
        if (!records.Next(text, out _, out _)) yield break;
        string[] header = text.TakeString().Split('\t');
        int col = CorpusColumns.Find(file, header, textColumn, "text");
        int idCol = idColumn is null ? -1 : CorpusColumns.Find(file, header, idColumn, "id");
        if (offset > 0)
        {
            c.Seek(offset);
            records.Line = startLine - 1;
        }
        for (long n = 0; n < maxRows && records.Next(text, out _, out long line); n++)
            yield return Row(file, line, text.TakeString().Split('\t'), col, textColumn, idCol, idColumn, idPrefix, startRow + n);
    }

    private static CorpusRow Row(string file, long line, IReadOnlyList<string> fields, int col, string textColumn, int idCol,
        string? idColumn, string idPrefix, long row)
    {
        if (col >= fields.Count)
            throw new UllmeException($"{file}:{line}: the row has {fields.Count} fields; column '{textColumn}' is field {col + 1}.");
        if (idCol >= fields.Count)
            throw new UllmeException($"{file}:{line}: the row has {fields.Count} fields; the id column '{idColumn}' is field {idCol + 1}.");
        return new CorpusRow(idCol < 0 ? $"{idPrefix}:{row + 1}" : fields[idCol], fields[col]);
    }
}
