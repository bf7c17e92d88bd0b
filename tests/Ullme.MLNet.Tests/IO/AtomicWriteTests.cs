using System.Diagnostics;
using Ullme.MLNet.IO;

namespace Ullme.MLNet.Tests.IO;

/// <summary>
/// The three write helpers of Core/IO (<see cref="AtomicFile"/>, <see cref="AtomicFolder"/>,
/// <see cref="TemporaryFolder"/>): an exception inside the writer leaves the previous content and nothing else behind,
/// and a reader never sees a partial file or folder, only the old content or the complete new one.
/// </summary>
public sealed class AtomicWriteTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-atomic-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string[] Entries() => Directory.GetFileSystemEntries(_dir, "*", SearchOption.AllDirectories)
        .Select(p => Path.GetRelativePath(_dir, p)).Order(StringComparer.Ordinal).ToArray();

    private static int DeadProcessId()
    {
        using var p = Process.Start(new ProcessStartInfo("true"))!;
        p.WaitForExit();
        return p.Id;
    }

    [Fact]
    public void AtomicFile_writer_failure_keeps_the_old_file_and_leaves_no_temporary()
    {
        string target = Path.Combine(_dir, "out.npy");
        File.WriteAllText(target, "old");
        var e = Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(target, s =>
        {
            s.Write("new, half"u8);
            throw new InvalidOperationException("bad row 7");
        }));
        Assert.Equal("bad row 7", e.Message);
        Assert.Equal("old", File.ReadAllText(target));
        Assert.Equal(["out.npy"], Entries());

        string fresh = Path.Combine(_dir, "fresh.json");
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(fresh, s => { s.WriteByte(1); throw new InvalidOperationException(); }));
        Assert.Equal(["out.npy"], Entries());
    }

    [Fact]
    public void AtomicFile_a_reader_sees_the_old_file_until_the_new_one_is_complete()
    {
        string target = Path.Combine(_dir, "result.json");
        File.WriteAllText(target, "old");
        AtomicFile.Write(target, s =>
        {
            s.Write("new "u8);
            s.Flush();
            Assert.Equal("old", File.ReadAllText(target));         // mid-write: the target is untouched
            Assert.Equal([$".result.json.{Environment.ProcessId}.tmp", "result.json"], Entries());
            s.Write("content"u8);
        });
        Assert.Equal("new content", File.ReadAllText(target));
        Assert.Equal(["result.json"], Entries());

        // A concurrent reader only ever sees one complete version.
        byte[] a = Enumerable.Repeat((byte)'a', 1 << 20).ToArray(), b = Enumerable.Repeat((byte)'b', 1 << 20).ToArray();
        AtomicFile.Write(target, s => s.Write(a));
        using var stop = new CancellationTokenSource();
        var seen = new List<string>();
        var reader = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                byte[] got = File.ReadAllBytes(target);
                if (got.Length != a.Length || got.Any(x => x != got[0])) seen.Add($"{got.Length} bytes, mixed or partial");
            }
        });
        reader.Start();
        for (int i = 0; i < 20; i++) AtomicFile.Write(target, s => { s.Write(i % 2 == 0 ? b : a, 0, 1 << 19); s.Flush(); s.Write(i % 2 == 0 ? b : a, 1 << 19, 1 << 19); });
        stop.Cancel();
        reader.Join();
        Assert.Empty(seen);
    }

    [Fact]
    public void AtomicFile_removes_temporaries_of_dead_processes_and_keeps_live_ones()
    {
        string target = Path.Combine(_dir, "x.npy");
        string stale = AtomicFile.TemporaryName(target, DeadProcessId()), live = AtomicFile.TemporaryName(target, Environment.ProcessId);
        File.WriteAllText(stale, "partial");
        AtomicFile.WriteAllText(target, "done");
        Assert.False(File.Exists(stale));
        Assert.Equal("done", File.ReadAllText(target));
        Assert.False(File.Exists(live));
    }

    [Fact]
    public void AtomicFolder_writer_failure_keeps_the_old_folder_and_leaves_no_staging()
    {
        string target = Path.Combine(_dir, "best");
        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "model.safetensors"), "old");
        Assert.Throws<IOException>(() => AtomicFolder.Write(target, staging =>
        {
            File.WriteAllText(Path.Combine(staging, "model.safetensors"), "new, half");
            throw new IOException("disk full");
        }));
        Assert.Equal(["best", Path.Combine("best", "model.safetensors")], Entries());
        Assert.Equal("old", File.ReadAllText(Path.Combine(target, "model.safetensors")));
    }

    [Fact]
    public void AtomicFolder_a_reader_sees_the_old_folder_until_the_new_one_is_complete()
    {
        string target = Path.Combine(_dir, "best");
        AtomicFolder.Write(target, staging => File.WriteAllText(Path.Combine(staging, "a.txt"), "old"));
        AtomicFolder.Write(target, staging =>
        {
            File.WriteAllText(Path.Combine(staging, "a.txt"), "new");
            Assert.Equal("old", File.ReadAllText(Path.Combine(target, "a.txt")));
            Assert.False(File.Exists(Path.Combine(target, "b.txt")));
            File.WriteAllText(Path.Combine(staging, "b.txt"), "new");
        });
        Assert.Equal(["best", Path.Combine("best", "a.txt"), Path.Combine("best", "b.txt")], Entries());
        Assert.Equal("new", File.ReadAllText(Path.Combine(target, "a.txt")));
    }

    [Fact]
    public void AtomicFolder_recovers_what_a_killed_replacement_left()
    {
        // Killed between "old moved aside" and "new moved in": the old folder comes back.
        string target = Path.Combine(_dir, "out");
        int dead = DeadProcessId();
        string replaced = AtomicFolder.ReplacedName(target, dead), staging = AtomicFolder.StagingName(target, dead);
        Directory.CreateDirectory(replaced);
        File.WriteAllText(Path.Combine(replaced, "a.txt"), "old");
        Directory.CreateDirectory(staging);
        File.WriteAllText(Path.Combine(staging, "a.txt"), "half");
        AtomicFolder.Recover(target);
        Assert.Equal(["out", Path.Combine("out", "a.txt")], Entries());
        Assert.Equal("old", File.ReadAllText(Path.Combine(target, "a.txt")));
    }

    [Fact]
    public void TemporaryFolder_is_unique_and_deleted_on_dispose_even_after_a_failure()
    {
        string kept;
        using (var a = new TemporaryFolder(_dir, "t-"))
        using (var b = new TemporaryFolder(_dir, "t-"))
        {
            Assert.NotEqual(a.Path, b.Path);
            Assert.True(Directory.Exists(a.Path));
            kept = a.Path;
        }
        Assert.False(Directory.Exists(kept));
        Assert.Throws<InvalidOperationException>((Action)(() =>
        {
            using var t = new TemporaryFolder(_dir, "t-");
            Directory.CreateDirectory(Path.Combine(t.Path, "sub"));
            File.WriteAllText(Path.Combine(t.Path, "sub", "weights.bin"), "x");
            throw new InvalidOperationException("extraction failed");
        }));
        Assert.Empty(Entries());
    }
}
