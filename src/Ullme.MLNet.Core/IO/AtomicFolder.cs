namespace Ullme.MLNet.IO;

/// <summary>
/// The one "write a folder atomically" of the code base: the content is written into a hidden staging sibling
/// (<c>.&lt;name&gt;.staging-&lt;pid&gt;</c>) and renamed into place only when complete. An older folder of the same name
/// is first renamed aside (<c>.&lt;name&gt;.replaced-&lt;pid&gt;</c>), the new one renamed in, then the old one deleted,
/// so at every moment the folder is the old one, the new one, or (only between the two renames) absent with the old
/// one intact beside it. A failure deletes the staging folder (and puts the old folder back if it was moved aside).
/// What a killed process leaves is repaired by the next write of the same folder (<see cref="Recover"/>).
/// </summary>
internal static class AtomicFolder
{
    /// <summary>Writes <paramref name="folder"/> with what <paramref name="write"/> puts into the (empty, existing)
    /// staging folder it is given.</summary>
    public static void Write(string folder, Action<string> write)
    {
        string full = Normalize(folder);
        Recover(full);
        string staging = CreateStaging(full);
        try
        {
            write(staging);
            Publish(staging, full);
        }
        catch
        {
            TryDelete(staging);
            throw;
        }
    }

    /// <summary>The staging sibling a process writes <paramref name="fullPath"/> through.</summary>
    internal static string StagingName(string fullPath, int processId) => Sibling(fullPath, "staging", processId);

    /// <summary>The sibling an older <paramref name="fullPath"/> is moved to while a process replaces it.</summary>
    internal static string ReplacedName(string fullPath, int processId) => Sibling(fullPath, "replaced", processId);

    /// <summary>A fresh, empty staging folder for <paramref name="folder"/> (this process's; an older one is deleted).</summary>
    public static string CreateStaging(string folder)
    {
        string full = Normalize(folder);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string staging = StagingName(full, Environment.ProcessId);
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        Directory.CreateDirectory(staging);
        return staging;
    }

    /// <summary>
    /// Renames the complete <paramref name="staging"/> folder to <paramref name="folder"/>. An existing folder is first
    /// renamed to <paramref name="replaced"/> (default <see cref="ReplacedName"/>), then <paramref name="afterMoveAside"/>
    /// runs (a fault-injection point), then the staging folder is renamed in; if that rename fails the old folder is put
    /// back. The old folder is then deleted, unless <paramref name="keepReplaced"/>: then its path is returned and the
    /// caller takes what it needs from it and deletes it. Returns null when nothing was replaced or it was deleted.
    /// </summary>
    public static string? Publish(string staging, string folder, string? replaced = null, Action? afterMoveAside = null, bool keepReplaced = false)
    {
        string full = Normalize(folder);
        if (!Directory.Exists(full))
        {
            Directory.Move(staging, full);
            return null;
        }
        string aside = replaced ?? ReplacedName(full, Environment.ProcessId);
        if (Directory.Exists(aside)) Directory.Delete(aside, recursive: true);
        Directory.Move(full, aside);
        afterMoveAside?.Invoke();
        try
        {
            Directory.Move(staging, full);
        }
        catch
        {
            try { if (!Directory.Exists(full)) Directory.Move(aside, full); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
            throw;
        }
        if (keepReplaced) return aside;
        TryDelete(aside);
        return null;
    }

    /// <summary>
    /// Repairs what processes that no longer run left beside <paramref name="folder"/>: an old folder moved aside while
    /// its replacement was not yet in place is moved back; one whose replacement is in place is handed to
    /// <paramref name="beforeDiscard"/> (to take what it must keep) and deleted; staging folders are deleted.
    /// </summary>
    public static void Recover(string folder, Action<string>? beforeDiscard = null)
    {
        string full = Normalize(folder);
        string? parent = Path.GetDirectoryName(full);
        if (parent is null || !Directory.Exists(parent)) return;
        foreach (string replaced in DeadSiblings(full, "replaced"))
        {
            if (!Directory.Exists(full))
            {
                Directory.Move(replaced, full);
                continue;
            }
            beforeDiscard?.Invoke(replaced);
            TryDelete(replaced);
        }
        foreach (string staging in DeadSiblings(full, "staging"))
            TryDelete(staging);
    }

    /// <summary>Deletes a folder if it exists; a failure (a file still open) is ignored: it is a leftover, not data.</summary>
    public static void TryDelete(string folder)
    {
        try { if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>Siblings <c>.&lt;name&gt;.&lt;what&gt;-&lt;pid&gt;</c> whose process is gone.</summary>
    private static List<string> DeadSiblings(string fullPath, string what)
    {
        string parent = Path.GetDirectoryName(fullPath)!;
        string prefix = $".{Path.GetFileName(fullPath)}.{what}-";
        var dead = new List<string>();
        foreach (string dir in Directory.GetDirectories(parent, prefix + "*"))
        {
            if (!int.TryParse(Path.GetFileName(dir)[prefix.Length..], out int pid) || pid == Environment.ProcessId || AtomicFile.IsAlive(pid)) continue;
            dead.Add(dir);
        }
        return dead;
    }

    private static string Sibling(string fullPath, string what, int processId) =>
        Path.Combine(Path.GetDirectoryName(fullPath)!, $".{Path.GetFileName(fullPath)}.{what}-{processId}");

    private static string Normalize(string folder) => Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder));
}
