using System.Text;
using System.Text.Json;
using Ullme.MLNet;
using Ullme.MLNet.Evaluation.Datasets;

namespace Ullme.Cli.Io;

/// <summary>One input item: a text, or pre-tokenized ids used exactly as given; with its 1-based line number.</summary>
internal sealed record InputRecord(string? Text, int[]? InputIds, int Line);

/// <summary>What reading an input found besides its records.</summary>
internal sealed class InputStats
{
    /// <summary>Invalid UTF-8 byte sequences, each replaced by U+FFFD.</summary>
    public long InvalidUtf8 { get; set; }
}

/// <summary>
/// Reads CLI inputs, streaming (one line in memory at a time): <c>.txt</c> (one text a line; a final newline does
/// not add an empty text), <c>.jsonl</c> (<c>{"text": ...}</c> or <c>{"input_ids": [...]}</c>; blank lines skipped),
/// <c>.csv</c> / <c>.tsv</c> with a header and a text column (read by the library's <see cref="DataFiles"/>). Any
/// unreadable line is an error naming the file and line. Lines end at '\n' (a '\r' before it is dropped). Invalid
/// UTF-8 byte sequences are replaced by U+FFFD and counted (<see cref="InputStats.InvalidUtf8"/>; the commands warn);
/// NUL bytes are valid UTF-8 and are kept as U+0000 (tokenizers treat them as control characters).
/// </summary>
internal static class InputReader
{
    public static List<InputRecord> Read(string path, string textColumn = "text", InputStats? stats = null) =>
        Enumerate(path, textColumn, stats).ToList();

    /// <summary>The records of <paramref name="path"/>, read as they are enumerated.</summary>
    public static IEnumerable<InputRecord> Enumerate(string path, string textColumn = "text", InputStats? stats = null)
    {
        if (!File.Exists(path)) throw new UllmeException($"Input file '{path}' does not exist.");
        string ext = Path.GetExtension(path).ToLowerInvariant();
        return ext switch
        {
            ".txt" => ReadLines(path, stats).Select(l => new InputRecord(l.Text, null, l.Line)),
            ".jsonl" or ".ndjson" => ReadJsonl(path, "text", stats),
            ".csv" => ReadDelimited(path, ',', textColumn),
            ".tsv" => ReadDelimited(path, '\t', textColumn),
            _ => throw new UllmeException($"Input '{path}': unknown extension '{ext}'. Use .txt, .jsonl, .csv or .tsv."),
        };
    }

    /// <summary>Lines of a file without their terminators (\n or \r\n), with their 1-based numbers, read one at a
    /// time; a trailing terminator adds no line.</summary>
    public static IEnumerable<(string Text, int Line)> ReadLines(string path, InputStats? stats = null)
    {
        var fallback = new CountingReplacementFallback();
        var encoding = (Encoding)new UTF8Encoding(false).Clone();
        encoding.DecoderFallback = fallback;
        using var reader = new StreamReader(path, encoding, detectEncodingFromByteOrderMarks: true, bufferSize: 1 << 16);
        var line = new StringBuilder();
        var buffer = new char[1 << 16];
        int number = 0;
        int n;
        while ((n = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < n; i++)
            {
                if (buffer[i] != '\n') continue;
                line.Append(buffer, start, i - start);
                start = i + 1;
                if (line.Length > 0 && line[^1] == '\r') line.Length--;
                if (stats is not null) stats.InvalidUtf8 = fallback.Count;
                yield return (line.ToString(), ++number);
                line.Clear();
            }
            line.Append(buffer, start, n - start);
        }
        if (stats is not null) stats.InvalidUtf8 = fallback.Count;
        if (line.Length > 0)
        {
            if (line[^1] == '\r') line.Length--;
            yield return (line.ToString(), ++number);
        }
    }

    /// <summary>The warning for the invalid UTF-8 an input held, or null.</summary>
    public static string? Utf8Warning(string path, InputStats stats) => stats.InvalidUtf8 == 0 ? null :
        $"'{path}': {stats.InvalidUtf8} invalid UTF-8 byte sequence{(stats.InvalidUtf8 == 1 ? "" : "s")} replaced by U+FFFD (\uFFFD).";

    /// <summary>Reads JSONL objects, each handed to <paramref name="parse"/> with its line number.</summary>
    public static List<T> ReadJsonlObjects<T>(string path, Func<JsonElement, int, T> parse, InputStats? stats = null) =>
        EnumerateJsonlObjects(path, parse, stats).ToList();

    /// <summary>JSONL objects as they are read.</summary>
    public static IEnumerable<T> EnumerateJsonlObjects<T>(string path, Func<JsonElement, int, T> parse, InputStats? stats = null)
    {
        foreach (var (text, line) in ReadLines(path, stats))
        {
            if (string.IsNullOrWhiteSpace(text)) continue;
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(text);
            }
            catch (JsonException e)
            {
                throw new UllmeException($"{path}:{line}: not valid JSON ({e.Message})");
            }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object)
                    throw new UllmeException($"{path}:{line}: expected a JSON object.");
                yield return parse(doc.RootElement, line);
            }
        }
    }

    private static IEnumerable<InputRecord> ReadJsonl(string path, string textField, InputStats? stats) => EnumerateJsonlObjects(path, (o, line) =>
    {
        if (o.TryGetProperty("input_ids", out var ids)) return new InputRecord(null, ParseIds(ids, path, line, "input_ids"), line);
        if (o.TryGetProperty(textField, out var t) && t.ValueKind == JsonValueKind.String) return new InputRecord(t.GetString()!, null, line);
        throw new UllmeException($"{path}:{line}: expected {{\"{textField}\": \"...\"}} or {{\"input_ids\": [...]}}.");
    }, stats);

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

    private static IEnumerable<InputRecord> ReadDelimited(string path, char separator, string textColumn)
    {
        // One CSV/TSV reader for the whole project: RFC 4180 for .csv, literal fields for .tsv, blank lines skipped.
        using var rows = (separator == '\t' ? DataFiles.ReadTsv(path) : DataFiles.ReadCsv(path, separator)).GetEnumerator();
        if (!rows.MoveNext()) yield break;
        var header = rows.Current.Fields;
        int col = Array.FindIndex(header, h => string.Equals(h.Trim(), textColumn, StringComparison.OrdinalIgnoreCase));
        if (col < 0)
            throw new UllmeException($"{path}: no column '{textColumn}' (columns: {string.Join(", ", header)}). Choose one with --text-column.");
        while (rows.MoveNext())
        {
            var (line, fields) = rows.Current;
            if (col >= fields.Length)
                throw new UllmeException($"{path}:{line}: the row has {fields.Length} fields; column '{textColumn}' is field {col + 1}.");
            yield return new InputRecord(fields[col], null, line);
        }
    }
}

/// <summary>A decoder fallback that replaces each invalid byte sequence by U+FFFD, as the default UTF-8 decoder
/// does, and counts the replacements.</summary>
internal sealed class CountingReplacementFallback : DecoderFallback
{
    private long _count;

    public long Count => Interlocked.Read(ref _count);

    public override int MaxCharCount => 1;

    public override DecoderFallbackBuffer CreateFallbackBuffer() => new Buffer(this);

    private sealed class Buffer(CountingReplacementFallback owner) : DecoderFallbackBuffer
    {
        private int _remaining;

        public override int Remaining => _remaining;

        public override bool Fallback(byte[] bytesUnknown, int index)
        {
            Interlocked.Increment(ref owner._count);
            _remaining = 1;
            return true;
        }

        public override char GetNextChar()
        {
            if (_remaining == 0) return '\0';
            _remaining--;
            return '\uFFFD';
        }

        public override bool MovePrevious()
        {
            if (_remaining != 0) return false;
            _remaining = 1;
            return true;
        }

        public override void Reset() => _remaining = 0;
    }
}
