using System.Text;
using System.Text.Json;
using Ullme.MLNet;
using Ullme.MLNet.Evaluation.Datasets;

namespace Ullme.Cli.Io;

/// <summary>One input item: a text, or pre-tokenized ids used exactly as given; with its 1-based line number.</summary>
internal sealed record InputRecord(string? Text, int[]? InputIds, int Line);

/// <summary>
/// Reads CLI inputs: <c>.txt</c> (one text a line; a final newline does not add an empty text), <c>.jsonl</c>
/// (<c>{"text": ...}</c> or <c>{"input_ids": [...]}</c>; blank lines skipped), <c>.csv</c> / <c>.tsv</c> with a
/// header and a text column (read by the library's <see cref="DataFiles"/>). Any unreadable line is an error naming the file and line.
/// </summary>
internal static class InputReader
{
    public static List<InputRecord> Read(string path, string textColumn = "text")
    {
        if (!File.Exists(path)) throw new UllmeException($"Input file '{path}' does not exist.");
        string ext = Path.GetExtension(path).ToLowerInvariant();
        return ext switch
        {
            ".txt" => ReadText(path),
            ".jsonl" or ".ndjson" => ReadJsonl(path, "text"),
            ".csv" => ReadDelimited(path, ',', textColumn),
            ".tsv" => ReadDelimited(path, '\t', textColumn),
            _ => throw new UllmeException($"Input '{path}': unknown extension '{ext}'. Use .txt, .jsonl, .csv or .tsv."),
        };
    }

    /// <summary>Lines of a file without their terminators (\n or \r\n); a trailing terminator adds no line.</summary>
    public static List<string> ReadLines(string path)
    {
        string all;
        try
        {
            all = new StreamReader(path, new UTF8Encoding(false, throwOnInvalidBytes: true), detectEncodingFromByteOrderMarks: true).ReadToEnd();
        }
        catch (DecoderFallbackException e)
        {
            throw new UllmeException($"'{path}' is not valid UTF-8: {e.Message}");
        }
        var lines = new List<string>(all.Split('\n'));
        if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        for (int i = 0; i < lines.Count; i++)
            if (lines[i].EndsWith('\r')) lines[i] = lines[i][..^1];
        return lines;
    }

    private static List<InputRecord> ReadText(string path) =>
        ReadLines(path).Select((l, i) => new InputRecord(l, null, i + 1)).ToList();

    /// <summary>Reads JSONL objects, each handed to <paramref name="parse"/> with its line number.</summary>
    public static List<T> ReadJsonlObjects<T>(string path, Func<JsonElement, int, T> parse)
    {
        var result = new List<T>();
        var lines = ReadLines(path);
        for (int i = 0; i < lines.Count; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(lines[i]);
            }
            catch (JsonException e)
            {
                throw new UllmeException($"{path}:{i + 1}: not valid JSON ({e.Message})");
            }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object)
                    throw new UllmeException($"{path}:{i + 1}: expected a JSON object.");
                result.Add(parse(doc.RootElement, i + 1));
            }
        }
        return result;
    }

    private static List<InputRecord> ReadJsonl(string path, string textField) => ReadJsonlObjects(path, (o, line) =>
    {
        if (o.TryGetProperty("input_ids", out var ids)) return new InputRecord(null, ParseIds(ids, path, line, "input_ids"), line);
        if (o.TryGetProperty(textField, out var t) && t.ValueKind == JsonValueKind.String) return new InputRecord(t.GetString()!, null, line);
        throw new UllmeException($"{path}:{line}: expected {{\"{textField}\": \"...\"}} or {{\"input_ids\": [...]}}.");
    });

    public static int[] ParseIds(JsonElement ids, string path, int line, string field)
    {
        if (ids.ValueKind != JsonValueKind.Array) throw new UllmeException($"{path}:{line}: \"{field}\" must be an array of integers.");
        var r = new int[ids.GetArrayLength()];
        int k = 0;
        foreach (var e in ids.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int v))
                throw new UllmeException($"{path}:{line}: \"{field}\"[{k}] is not an integer.");
            r[k++] = v;
        }
        return r;
    }

    private static List<InputRecord> ReadDelimited(string path, char separator, string textColumn)
    {
        // One CSV/TSV reader for the whole project: RFC 4180 for .csv, literal fields for .tsv, blank lines skipped.
        var rows = (separator == '\t' ? DataFiles.ReadTsv(path) : DataFiles.ReadCsv(path, separator)).GetEnumerator();
        if (!rows.MoveNext()) return [];
        var header = rows.Current.Fields;
        int col = Array.FindIndex(header, h => string.Equals(h.Trim(), textColumn, StringComparison.OrdinalIgnoreCase));
        if (col < 0)
            throw new UllmeException($"{path}: no column '{textColumn}' (columns: {string.Join(", ", header)}). Choose one with --text-column.");
        var result = new List<InputRecord>();
        while (rows.MoveNext())
        {
            var (line, fields) = rows.Current;
            if (col >= fields.Length)
                throw new UllmeException($"{path}:{line}: the row has {fields.Length} fields; column '{textColumn}' is field {col + 1}.");
            result.Add(new InputRecord(fields[col], null, line));
        }
        return result;
    }
}
