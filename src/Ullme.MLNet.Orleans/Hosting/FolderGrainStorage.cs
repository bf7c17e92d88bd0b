using System.Text;
using Orleans.Storage;
using Ullme.MLNet.IO;

namespace Ullme.MLNet.Orleans.Hosting;

/// <summary>
/// Grain storage in a folder (the state of a localhost cluster): one JSON file per grain and state name, written
/// atomically (temporary + rename), with an ETag checked on every write so a stale activation cannot overwrite a
/// newer state. Every silo of the cluster must see the same folder (one machine, or a shared file system).
/// </summary>
internal sealed class FolderGrainStorage(string root) : IGrainStorage
{
    private static readonly UTF8Encoding Utf8 = new(false);

    public string Root { get; } = Path.GetFullPath(root);

    private string PathOf(string stateName, GrainId grainId)
    {
        var name = new StringBuilder();
        foreach (char c in grainId.ToString())
            name.Append(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_');
        return Path.Combine(Root, Sanitize(stateName), name + ".json");
    }

    private static string Sanitize(string s) => string.Concat(s.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_'));

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathOf(stateName, grainId);
        var stored = ReadFile(path);
        if (stored is null)
        {
            grainState.RecordExists = false;
            grainState.ETag = null;
            return Task.CompletedTask;
        }
        grainState.State = JsonStateSerializer.Instance.Deserialize<T>(BinaryData.FromBytes(stored.Value.State));
        grainState.ETag = stored.Value.ETag;
        grainState.RecordExists = true;
        return Task.CompletedTask;
    }

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathOf(stateName, grainId);
        CheckETag(path, grainState.ETag, grainId);
        string etag = Guid.NewGuid().ToString("N");
        var state = JsonStateSerializer.Instance.Serialize(grainState.State).ToArray();
        AtomicFile.Write(path, s =>
        {
            s.Write(Utf8.GetBytes(etag + "\n"));
            s.Write(state);
        });
        grainState.ETag = etag;
        grainState.RecordExists = true;
        return Task.CompletedTask;
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathOf(stateName, grainId);
        CheckETag(path, grainState.ETag, grainId);
        File.Delete(path);
        grainState.ETag = null;
        grainState.RecordExists = false;
        return Task.CompletedTask;
    }

    private static void CheckETag(string path, string? expected, GrainId grainId)
    {
        string? current = ReadFile(path)?.ETag;
        if (current != expected)
            throw new InconsistentStateException($"the stored state of {grainId} changed since it was read (ETag {current ?? "none"}, expected {expected ?? "none"})", current ?? "", expected ?? "");
    }

    /// <summary>The file's ETag (its first line) and state (the rest), or null when there is none.</summary>
    private static (string ETag, byte[] State)? ReadFile(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        catch (DirectoryNotFoundException)
        {
            return null;
        }
        int nl = Array.IndexOf(bytes, (byte)'\n');
        if (nl <= 0) throw new UllmeException($"grain state file '{path}' is damaged (no ETag line); delete it to start that job over.");
        return (Utf8.GetString(bytes, 0, nl), bytes[(nl + 1)..]);
    }
}
