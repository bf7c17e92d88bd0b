using System.Globalization;
using System.Text;

namespace Ullme.MLNet.IO;

/// <summary>
/// The one "write a file atomically" of the code base: the content goes to a hidden temporary beside the target
/// (<c>.&lt;name&gt;.&lt;pid&gt;.tmp</c>), is flushed to disk and only then renamed over the target, so a reader sees the
/// old file or the complete new one, never a partial one. A failure (an exception in the writer, cancellation) deletes
/// the temporary and leaves the target as it was. A process killed outright (SIGKILL, a second Ctrl+C) cannot delete
/// it: the next write of the same file removes such leftovers of processes that are no longer alive
/// (<see cref="RemoveStaleTemporaries"/>; the CLI also sweeps an output folder with it).
/// </summary>
internal static class AtomicFile
{
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false);

    /// <summary>Writes <paramref name="path"/> with what <paramref name="write"/> puts into the stream.</summary>
    public static void Write(string path, Action<Stream> write, int bufferSize = 4096)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        RemoveStaleTemporaries(dir, Path.GetFileName(full));
        string tmp = TemporaryName(full, Environment.ProcessId);
        try
        {
            using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    /// <summary>Writes <paramref name="content"/> as UTF-8 without a byte-order mark.</summary>
    public static void WriteAllText(string path, string content) =>
        Write(path, s => s.Write(Utf8.GetBytes(content)));

    /// <summary>The temporary a process writes <paramref name="fullPath"/> through.</summary>
    internal static string TemporaryName(string fullPath, int processId) =>
        Path.Combine(Path.GetDirectoryName(fullPath)!, $".{Path.GetFileName(fullPath)}.{processId}.tmp");

    /// <summary>
    /// Deletes <c>.&lt;fileName&gt;.&lt;pid&gt;.tmp</c> files in <paramref name="dir"/> (every such file when
    /// <paramref name="fileName"/> is null, in sub-folders too when <paramref name="recursive"/>) whose process is
    /// no longer running. Returns the paths deleted.
    /// </summary>
    internal static List<string> RemoveStaleTemporaries(string dir, string? fileName = null, bool recursive = false)
    {
        var removed = new List<string>();
        if (!Directory.Exists(dir)) return removed;
        string pattern = fileName is null ? ".*.tmp" : $".{fileName}.*.tmp";
        IEnumerable<string> candidates;
        try
        {
            candidates = Directory.EnumerateFiles(dir, pattern, recursive ? SearchOption.AllDirectories : SearchOption.TopDirectoryOnly).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return removed;
        }
        foreach (string file in candidates)
        {
            if (ProcessIdOf(Path.GetFileName(file), fileName) is not int pid || pid == Environment.ProcessId || IsAlive(pid)) continue;
            try
            {
                File.Delete(file);
                removed.Add(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return removed;
    }

    /// <summary>The pid in <c>.&lt;name&gt;.&lt;pid&gt;.tmp</c>, or null when the name has another shape.</summary>
    internal static int? ProcessIdOf(string tempName, string? fileName)
    {
        if (!tempName.StartsWith('.') || !tempName.EndsWith(".tmp", StringComparison.Ordinal)) return null;
        string middle = tempName[1..^4];
        int dot = middle.LastIndexOf('.');
        if (dot <= 0) return null;
        if (fileName is not null && !string.Equals(middle[..dot], fileName, StringComparison.Ordinal)) return null;
        return int.TryParse(middle[(dot + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0 ? pid : null;
    }

    /// <summary>Whether a process with this id runs (on Linux: its /proc entry exists).</summary>
    internal static bool IsAlive(int pid)
    {
        if (OperatingSystem.IsLinux()) return Directory.Exists($"/proc/{pid}");
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static void TryDelete(string file)
    {
        try { File.Delete(file); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
