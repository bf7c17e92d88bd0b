using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>
/// Line-numbered readers for the data formats of the built-in tasks: tab-separated text without quoting,
/// RFC 4180 CSV (quoted fields may hold commas, doubled quotes and newlines) and JSON Lines. Every error names the
/// file and the 1-based line. Files are read as UTF-8; a byte-order mark is skipped.
/// </summary>
internal static class DataFiles
{
    /// <summary>An exception for a bad line: "path:line: message".</summary>
    public static UllmeException Error(string path, int line, string message) => new($"{path}:{line}: {message}");

    public static void RequireFile(string path, string what)
    {
        if (!File.Exists(path)) throw new UllmeException($"{what}: file not found: {path}");
    }

    /// <summary>Lines split on tabs, quotes taken literally; blank lines skipped. Line numbers are 1-based.</summary>
    public static IEnumerable<(int Line, string[] Fields)> ReadTsv(string path)
    {
        RequireFile(path, "tab-separated file");
        int n = 0;
        foreach (var raw in File.ReadLines(path, Encoding.UTF8))
        {
            n++;
            string line = raw.TrimEnd('\r');
            if (line.Length == 0) continue;
            yield return (n, line.Split('\t'));
        }
    }

    /// <summary>RFC 4180 records (comma-separated); the line number is where the record starts. Blank lines skipped.</summary>
    public static IEnumerable<(int Line, string[] Fields)> ReadCsv(string path, char separator = ',')
    {
        RequireFile(path, "CSV file");
        using var reader = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        int line = 1;
        while (true)
        {
            int c = reader.Peek();
            if (c < 0) yield break;
            int start = line;
            var fields = new List<string>();
            var field = new StringBuilder();
            bool quoted = false, fieldWasQuoted = false, endOfRecord = false;
            while (!endOfRecord)
            {
                c = reader.Read();
                if (c < 0)
                {
                    if (quoted) throw Error(path, start, "unterminated quoted field (a '\"' is never closed)");
                    break;
                }
                char ch = (char)c;
                if (quoted)
                {
                    if (ch == '"')
                    {
                        if (reader.Peek() == '"') { reader.Read(); field.Append('"'); }
                        else quoted = false;
                    }
                    else
                    {
                        if (ch == '\n') line++;
                        field.Append(ch);
                    }
                    continue;
                }
                switch (ch)
                {
                    case '"' when field.Length == 0 && !fieldWasQuoted:
                        quoted = true;
                        fieldWasQuoted = true;
                        break;
                    case '"':
                        throw Error(path, line, "stray '\"' inside an unquoted field (quote the whole field and double inner quotes)");
                    case '\r':
                        break;
                    case '\n':
                        line++;
                        endOfRecord = true;
                        break;
                    default:
                        if (ch == separator)
                        {
                            fields.Add(field.ToString());
                            field.Clear();
                            fieldWasQuoted = false;
                        }
                        else if (fieldWasQuoted)
                            throw Error(path, line, $"unexpected '{ch}' after a closing quote");
                        else field.Append(ch);
                        break;
                }
            }
            fields.Add(field.ToString());
            if (fields.Count == 1 && fields[0].Length == 0 && !fieldWasQuoted) continue; // blank line
            yield return (start, fields.ToArray());
        }
    }

    /// <summary>One JSON object per non-blank line.</summary>
    public static IEnumerable<(int Line, JsonObject Row)> ReadJsonl(string path)
    {
        RequireFile(path, "JSON Lines file");
        int n = 0;
        foreach (var raw in File.ReadLines(path, Encoding.UTF8))
        {
            n++;
            if (string.IsNullOrWhiteSpace(raw)) continue;
            JsonNode? node;
            try { node = JsonNode.Parse(raw); }
            catch (JsonException e) { throw Error(path, n, $"not valid JSON ({e.Message})"); }
            if (node is not JsonObject o) throw Error(path, n, "expected a JSON object");
            yield return (n, o);
        }
    }

    /// <summary>A JSON field as text: strings as is, numbers by their JSON text, null/missing as null.</summary>
    public static string? JsonText(JsonObject row, string name) => row[name] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
        JsonValue v => v.ToJsonString(),
        var other => other.ToJsonString(),
    };

    public static double ParseScore(string path, int line, string text, string column)
    {
        if (!double.TryParse(text.Trim(), System.Globalization.NumberStyles.Float,
                System.Globalization.CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw Error(path, line, $"{column} '{text}' is not a number");
        return v;
    }

    /// <summary>The first existing directory among <paramref name="names"/> under <paramref name="root"/>
    /// (case-insensitive), else null.</summary>
    public static string? FindSubfolder(string root, IEnumerable<string> names)
    {
        if (!Directory.Exists(root)) return null;
        var dirs = Directory.GetDirectories(root);
        foreach (var name in names)
            foreach (var d in dirs)
                if (string.Equals(Path.GetFileName(d), name, StringComparison.OrdinalIgnoreCase)) return d;
        return null;
    }

    /// <summary>A file in <paramref name="folder"/> matching <paramref name="name"/> case-insensitively, or null.</summary>
    public static string? FindFile(string folder, string name)
    {
        if (!Directory.Exists(folder)) return null;
        string exact = Path.Combine(folder, name);
        if (File.Exists(exact)) return exact;
        return Directory.GetFiles(folder).FirstOrDefault(f => string.Equals(Path.GetFileName(f), name, StringComparison.OrdinalIgnoreCase));
    }
}
