using System.Buffers;

namespace Ullme.MLNet.Orleans.Corpus;

/// <summary>Lines as <c>ullme embed</c> reads .txt and JSONL: a line ends at '\n' (a '\r' before it stays in the
/// bytes; the readers drop it from the text); the piece after the last '\n' is a line when it is not empty.</summary>
internal static class TextLines
{
    /// <summary>Reads one line, its bytes into <paramref name="text"/> when given; <paramref name="blank"/> (when
    /// given) judges whether it is blank. False at the end of the file.</summary>
    public static bool Next(ByteCursor c, Utf8Collector? text, BlankLineCheck? blank, out long start, out bool isBlank)
    {
        start = c.Position;
        bool any = false, newline = false, nonBlank = false;
        blank?.Reset();
        while (c.Fill())
        {
            var span = c.Available;
            int i = span.IndexOf((byte)'\n');
            var part = i < 0 ? span : span[..i];
            if (part.Length > 0)
            {
                any = true;
                text?.Append(part);
                if (blank is not null && !nonBlank) nonBlank = blank.Feed(part);
            }
            if (i >= 0)
            {
                c.Advance(i + 1);
                newline = true;
                break;
            }
            c.Advance(span.Length);
        }
        if (blank is not null && !nonBlank) nonBlank = blank.Finish();
        isBlank = blank is not null && !nonBlank;
        return newline || any;
    }

    /// <summary>The text of a line without the one '\r' that may end it.</summary>
    public static string TrimCr(string s) => s.Length > 0 && s[^1] == '\r' ? s[..^1] : s;
}

/// <summary>
/// RFC 4180 records over bytes, with exactly the rules of the library's CSV reader (<c>DataFiles.ReadCsv</c>, which
/// <c>ullme embed</c> uses): a field that starts with '"' is quoted and may hold separators, newlines and doubled
/// quotes; a '"' elsewhere in an unquoted field, or a character after a closing quote, is an error; a '\r' outside
/// quotes is dropped; a record that is one empty unquoted field (a blank line) is skipped. The separators are ASCII,
/// so the state machine runs on the UTF-8 bytes and decodes only the fields it keeps.
/// </summary>
internal sealed class CsvRecords(ByteCursor c, byte separator)
{
    private readonly Utf8Collector _field = new();
    private readonly SearchValues<byte> _unquotedStops = SearchValues.Create([(byte)'"', (byte)'\r', (byte)'\n', separator]);

    /// <summary>The 1-based line of the next byte (lines counted at '\n', inside quotes too).</summary>
    public long Line { get; set; } = 1;

    /// <summary>The next non-blank record: its first byte and line; its fields into <paramref name="fields"/> when
    /// given (else only skipped over). False at the end of the file.</summary>
    public bool Next(List<string>? fields, out long start, out long startLine)
    {
        bool collect = fields is not null;
        while (true)
        {
            start = c.Position;
            startLine = Line;
            if (c.Peek() < 0) return false;
            fields?.Clear();
            _field.Clear();
            int count = 0;
            long fieldLength = 0;
            bool quoted = false, wasQuoted = false;
            while (true)
            {
                if (!c.Fill())
                {
                    if (quoted) throw Error(startLine, "unterminated quoted field (a '\"' is never closed)");
                    break;
                }
                var span = c.Available;
                if (quoted)
                {
                    int q = span.IndexOfAny((byte)'"', (byte)'\n');
                    if (q < 0)
                    {
                        if (collect) _field.Append(span);
                        c.Advance(span.Length);
                        continue;
                    }
                    if (collect) _field.Append(span[..q]);
                    byte qb = span[q];
                    c.Advance(q + 1);
                    if (qb == '\n')
                    {
                        Line++;
                        if (collect) _field.Append((byte)'\n');
                    }
                    else if (c.Peek() == '"')
                    {
                        c.Advance(1);
                        if (collect) _field.Append((byte)'"');
                    }
                    else quoted = false;
                    continue;
                }
                int j = span.IndexOfAny(_unquotedStops);
                int run = j < 0 ? span.Length : j;
                if (run > 0)
                {
                    if (wasQuoted) throw Error(Line, $"unexpected '{FirstChar(span[..run])}' after a closing quote");
                    if (collect) _field.Append(span[..run]);
                    fieldLength += run;
                }
                if (j < 0)
                {
                    c.Advance(run);
                    continue;
                }
                byte d = span[j];
                c.Advance(j + 1);
                if (d == '"')
                {
                    if (fieldLength != 0 || wasQuoted)
                        throw Error(Line, "stray '\"' inside an unquoted field (quote the whole field and double inner quotes)");
                    quoted = wasQuoted = true;
                }
                else if (d == '\r')
                {
                    if (collect) _field.Break(); // dropped: the bytes around it do not join into one character
                }
                else if (d == '\n')
                {
                    Line++;
                    break;
                }
                else
                {
                    count++;
                    fields?.Add(_field.TakeString());
                    fieldLength = 0;
                    wasQuoted = false;
                }
            }
            if (count == 0 && fieldLength == 0 && !wasQuoted) continue; // a blank line
            fields?.Add(_field.TakeString());
            return true;
        }
    }

    private static char FirstChar(ReadOnlySpan<byte> bytes)
    {
        Span<char> one = stackalloc char[8];
        int n = System.Text.Encoding.UTF8.GetChars(bytes[..Math.Min(bytes.Length, 4)], one);
        return n > 0 ? one[0] : '?';
    }

    private UllmeException Error(long line, string message) => new($"{c.Path}:{line}: {message}");
}

/// <summary>
/// Tab-separated lines with exactly the rules of the library's TSV reader (<c>DataFiles.ReadTsv</c>): lines end at
/// '\n', '\r\n' or a lone '\r' (as <see cref="TextReader.ReadLine"/> splits them), an empty line is skipped,
/// quotes are literal.
/// </summary>
internal sealed class TsvRecords(ByteCursor c)
{
    /// <summary>The lines read so far (the next line is <c>Line + 1</c>).</summary>
    public long Line { get; set; }

    /// <summary>The next non-empty line: its first byte and 1-based line; its bytes into <paramref name="text"/>
    /// when given. False at the end of the file.</summary>
    public bool Next(Utf8Collector? text, out long start, out long startLine)
    {
        while (true)
        {
            start = c.Position;
            startLine = Line + 1;
            if (c.Peek() < 0) return false;
            Line++;
            text?.Clear();
            long length = 0;
            while (c.Fill())
            {
                var span = c.Available;
                int i = span.IndexOfAny((byte)'\r', (byte)'\n');
                var part = i < 0 ? span : span[..i];
                length += part.Length;
                text?.Append(part);
                if (i < 0)
                {
                    c.Advance(span.Length);
                    continue;
                }
                byte b = span[i];
                c.Advance(i + 1);
                if (b == '\r' && c.Peek() == '\n') c.Advance(1);
                break;
            }
            if (length > 0) return true;
        }
    }
}

/// <summary>The header lookup of <c>ullme embed</c>: the first column whose trimmed name equals the wanted one,
/// ignoring case.</summary>
internal static class CorpusColumns
{
    public static int Find(string path, IReadOnlyList<string> header, string name, string role)
    {
        for (int i = 0; i < header.Count; i++)
            if (string.Equals(header[i].Trim(), name, StringComparison.OrdinalIgnoreCase)) return i;
        throw new UllmeException($"{path}: no {role} column '{name}' (columns: {string.Join(", ", header)}).");
    }
}
