namespace Ullme.MLNet.IO;

/// <summary>
/// The one place where paths are compared. A path is first made absolute and stripped of a trailing separator
/// (<c>./model/</c>, <c>model</c> and <c>x/../model</c> are the same folder), and containment compares against the
/// folder followed by a separator, so <c>/tmp/model-evil/a</c> is not inside <c>/tmp/model</c>. Comparisons are
/// ordinal (case-insensitive on Windows and macOS, whose usual file systems are).
/// </summary>
internal static class PathGuard
{
    private static StringComparison Comparison =>
        OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;

    /// <summary>The absolute form of <paramref name="path"/>, without a trailing separator (a root keeps its own).</summary>
    public static string Normalize(string path) => Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));

    /// <summary>Whether both paths name the same file or folder (after <see cref="Normalize"/>; links are not followed).</summary>
    public static bool Same(string a, string b) => string.Equals(Normalize(a), Normalize(b), Comparison);

    /// <summary>Whether <paramref name="path"/> lies strictly inside <paramref name="folder"/>.</summary>
    public static bool IsInside(string path, string folder)
    {
        string root = Normalize(folder);
        string full = Normalize(path);
        string prefix = Path.EndsInDirectorySeparator(root) ? root : root + Path.DirectorySeparatorChar;
        return full.Length > prefix.Length && full.StartsWith(prefix, Comparison);
    }

    /// <summary>Whether <paramref name="path"/> is <paramref name="folder"/> itself or lies inside it.</summary>
    public static bool IsSameOrInside(string path, string folder) => Same(path, folder) || IsInside(path, folder);

    /// <summary>
    /// <paramref name="relative"/> (a name read from a file: a shard, a module path, a zip entry) resolved under
    /// <paramref name="folder"/>; null when it is rooted or leaves the folder (<c>../x</c>, <c>/etc/passwd</c>).
    /// </summary>
    public static string? ResolveInside(string folder, string relative)
    {
        if (string.IsNullOrEmpty(relative) || Path.IsPathRooted(relative)) return null;
        string full = Normalize(Path.Combine(Normalize(folder), relative));
        return IsInside(full, folder) ? full : null;
    }
}
