using System.Text;
using System.Text.RegularExpressions;

namespace Ullme.MLNet.Orleans.Corpus;

/// <summary>
/// Expands the inputs of a corpus job: each pattern is a file path or a glob whose directory and file-name parts may
/// hold <c>*</c> (any characters but a separator), <c>?</c> (one character) and, as a whole part, <c>**</c> (any
/// depth of directories, none included). Relative patterns are taken from the current directory.
/// </summary>
internal static class CorpusFiles
{
    private static readonly char[] Separators = Path.DirectorySeparatorChar == Path.AltDirectorySeparatorChar
        ? [Path.DirectorySeparatorChar]
        : [Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar];

    private static readonly StringComparison NameComparison =
        OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;

    private static readonly EnumerationOptions Listing = new()
    {
        AttributesToSkip = 0,
        IgnoreInaccessible = true,
        RecurseSubdirectories = false,
        ReturnSpecialDirectories = false,
    };

    /// <summary>The absolute paths of the files <paramref name="patterns"/> name: sorted ordinally within each
    /// pattern, in pattern order, each file once (where it first matched). A pattern that matches nothing, or a
    /// matched file with an unsupported extension, is a <see cref="UllmeException"/>.</summary>
    public static IReadOnlyList<string> Expand(IEnumerable<string> patterns)
    {
        ArgumentNullException.ThrowIfNull(patterns);
        var result = new List<string>();
        var seen = new HashSet<string>(StringComparer.FromComparison(NameComparison));
        foreach (string pattern in patterns)
        {
            if (string.IsNullOrWhiteSpace(pattern)) throw new UllmeException("An input pattern is empty.");
            var matches = Match(pattern);
            if (matches.Count == 0)
                throw new UllmeException(IsGlob(pattern) ? $"Input pattern '{pattern}' matches no file." : $"Input file '{pattern}' does not exist.");
            matches.Sort(StringComparer.Ordinal);
            foreach (string file in matches)
            {
                if (CorpusFormats.TryOf(file) is null)
                    throw new UllmeException($"Input '{file}' (from '{pattern}'): unsupported extension '{Path.GetExtension(file)}'. Use {CorpusFormats.Supported}.");
                if (seen.Add(file)) result.Add(file);
            }
        }
        return result;
    }

    private static bool IsGlob(string pattern) => pattern.AsSpan().IndexOfAny('*', '?') >= 0;

    private static List<string> Match(string pattern)
    {
        string full = Path.GetFullPath(pattern);
        if (!IsGlob(pattern))
        {
            if (Directory.Exists(full))
                throw new UllmeException($"Input '{pattern}' is a directory; name its files, e.g. '{Path.Combine(pattern, "*.jsonl")}'.");
            return File.Exists(full) ? [full] : [];
        }
        string root = Path.GetPathRoot(full) ?? "";
        string[] parts = full[root.Length..].Split(Separators, StringSplitOptions.RemoveEmptyEntries);
        if (root.Length == 0) root = Environment.CurrentDirectory;
        var found = new HashSet<string>(StringComparer.FromComparison(NameComparison));
        Walk(root, parts, 0, found);
        return [.. found];
    }

    private static void Walk(string dir, string[] parts, int i, HashSet<string> found)
    {
        string part = parts[i];
        bool last = i == parts.Length - 1;
        if (part == "**")
        {
            if (last)
            {
                // a trailing ** is every file below
                foreach (string f in SafeFiles(dir)) found.Add(f);
                foreach (string d in SafeDirectories(dir, followLinks: false)) Walk(d, parts, i, found);
                return;
            }
            Walk(dir, parts, i + 1, found);
            foreach (string d in SafeDirectories(dir, followLinks: false)) Walk(d, parts, i, found);
            return;
        }
        if (!IsGlob(part))
        {
            string next = Path.Combine(dir, part);
            if (last) { if (File.Exists(next)) found.Add(next); }
            else if (Directory.Exists(next)) Walk(next, parts, i + 1, found);
            return;
        }
        var regex = SegmentRegex(part);
        if (last)
        {
            foreach (string f in SafeFiles(dir))
                if (regex.IsMatch(Path.GetFileName(f))) found.Add(f);
            return;
        }
        foreach (string d in SafeDirectories(dir, followLinks: true))
            if (regex.IsMatch(Path.GetFileName(d))) Walk(d, parts, i + 1, found);
    }

    private static IEnumerable<string> SafeFiles(string dir) =>
        Directory.Exists(dir) ? Directory.EnumerateFiles(dir, "*", Listing) : [];

    /// <summary>The subdirectories of <paramref name="dir"/>; below <c>**</c> symbolic links are not followed
    /// (a link to a parent would never end).</summary>
    private static IEnumerable<string> SafeDirectories(string dir, bool followLinks)
    {
        if (!Directory.Exists(dir)) return [];
        var dirs = Directory.EnumerateDirectories(dir, "*", Listing);
        return followLinks ? dirs : dirs.Where(d => (File.GetAttributes(d) & FileAttributes.ReparsePoint) == 0);
    }

    private static Regex SegmentRegex(string part)
    {
        var sb = new StringBuilder("^");
        foreach (char ch in part)
        {
            sb.Append(ch switch
            {
                '*' => "[^/\\\\]*",
                '?' => "[^/\\\\]",
                _ => Regex.Escape(ch.ToString()),
            });
        }
        sb.Append('$');
        var options = RegexOptions.CultureInvariant | (NameComparison == StringComparison.OrdinalIgnoreCase ? RegexOptions.IgnoreCase : 0);
        return new Regex(sb.ToString(), options);
    }
}
