namespace Ullme.MLNet.IO;

/// <summary>
/// The one temporary folder of the code base: a uniquely named folder (<c>&lt;prefix&gt;&lt;32 hex digits&gt;</c>, under the
/// system temporary folder unless a parent is given), deleted on <see cref="Dispose"/>, or when its owner is collected
/// without disposing it, or at process exit, whichever comes first. Deletion never throws (a file still open, e.g.
/// memory-mapped on Windows, leaves the folder to the OS's temporary-file cleaner).
/// </summary>
internal sealed class TemporaryFolder : IDisposable
{
    private static readonly HashSet<string> Live = InitLive();
    private int _deleted;

    /// <summary>Creates the folder.</summary>
    public TemporaryFolder(string? parent = null, string prefix = "ullme-")
    {
        Path = System.IO.Path.Combine(parent ?? System.IO.Path.GetTempPath(), prefix + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
        lock (Live) Live.Add(Path);
    }

    /// <summary>The folder's full path.</summary>
    public string Path { get; }

    public void Dispose()
    {
        Delete();
        GC.SuppressFinalize(this);
    }

    ~TemporaryFolder() => Delete();

    private void Delete()
    {
        if (Interlocked.Exchange(ref _deleted, 1) != 0) return;
        lock (Live) Live.Remove(Path);
        AtomicFolder.TryDelete(Path);
    }

    private static HashSet<string> InitLive()
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            lock (set) foreach (string f in set) AtomicFolder.TryDelete(f);
        };
        return set;
    }
}
