using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Ullme.MLNet.IO;

namespace Ullme.MLNet.Hub;

/// <summary>
/// The Hugging Face Hub cache as Python's huggingface_hub lays it out, read and written the same way:
/// <code>
/// {cache}/models--{org}--{name}/refs/{revision}          the commit hash a branch or tag points to
/// {cache}/models--{org}--{name}/blobs/{etag}             file contents, named by ETag (sha256 for LFS files, git sha1 otherwise)
/// {cache}/models--{org}--{name}/snapshots/{commit}/{file} relative symbolic links into ../../blobs (plain files accepted)
/// {cache}/.locks/models--{org}--{name}/{etag}.lock        held while a blob is downloaded
/// </code>
/// </summary>
internal sealed partial class HubCache(string root)
{
    public string Root { get; } = Path.GetFullPath(root);

    public string RepoFolder(HubModelId id) => Path.Combine(Root, $"models--{id.Organization}--{id.Name}");

    public string SnapshotFolder(HubModelId id, string commit) => Path.Combine(RepoFolder(id), "snapshots", commit);

    public string BlobPath(HubModelId id, string etag) => Path.Combine(RepoFolder(id), "blobs", etag);

    public string LockPath(HubModelId id, string etag) => Path.Combine(Root, ".locks", $"models--{id.Organization}--{id.Name}", etag + ".lock");

    public static bool IsCommitHash(string revision) => CommitPattern().IsMatch(revision);

    /// <summary>The commit a revision names in the cache: itself when it is a commit hash whose snapshot exists,
    /// else the hash in <c>refs/{revision}</c>; null when the cache knows nothing of it.</summary>
    public string? ResolveRevision(HubModelId id, string revision)
    {
        if (IsCommitHash(revision)) return Directory.Exists(SnapshotFolder(id, revision)) ? revision : null;
        string refFile = Path.Combine(RepoFolder(id), "refs", revision);
        if (!File.Exists(refFile)) return null;
        string commit;
        try
        {
            commit = ModelFileGuard.ReadAllText(refFile, 4096).Trim();
        }
        catch (UllmeException)
        {
            return null;   // an empty or unreadable ref is a cache miss, rewritten by the next download
        }
        return IsCommitHash(commit) ? commit : null;
    }

    /// <summary>Records that <paramref name="revision"/> points to <paramref name="commit"/> (atomically).</summary>
    public void WriteRef(HubModelId id, string revision, string commit)
    {
        if (revision == commit) return;
        string refFile = Path.Combine(RepoFolder(id), "refs", revision);
        Directory.CreateDirectory(Path.GetDirectoryName(refFile)!);
        string temp = TempName(refFile);
        File.WriteAllText(temp, commit, new UTF8Encoding(false));
        File.Move(temp, refFile, overwrite: true);
    }

    /// <summary>Whether the snapshot holds <paramref name="file"/> (a plain file, or a link that resolves).</summary>
    public static bool Has(string snapshot, string file)
    {
        var info = new FileInfo(Path.Combine(snapshot, file));
        if (info.LinkTarget is null) return info.Exists;
        try
        {
            return info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo { Exists: true };
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>
    /// Puts <paramref name="file"/> into the snapshot as a relative symbolic link to its blob, as huggingface_hub does
    /// (<c>../../blobs/{etag}</c>, one more <c>../</c> per folder level of the file); where links cannot be made, a copy
    /// of the blob. Atomic: made under a temporary name, then renamed.
    /// </summary>
    public void Link(HubModelId id, string commit, string file, string etag)
    {
        string snapshot = SnapshotFolder(id, commit);
        string target = Path.Combine(snapshot, file);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        string blob = BlobPath(id, etag);
        string relative = Path.GetRelativePath(Path.GetDirectoryName(target)!, blob);
        string temp = TempName(target);
        try
        {
            File.CreateSymbolicLink(temp, relative);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            File.Copy(blob, temp, overwrite: true);
        }
        File.Move(temp, target, overwrite: true);
    }

    private static string TempName(string path) =>
        Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");

    /// <summary>
    /// The files of <paramref name="snapshot"/> a load needs that are missing: config.json, the weights
    /// (model.safetensors, or the index and every shard it names) and a tokenizer (tokenizer.json, tokenizer.model,
    /// vocab.txt, or encoder.json + vocab.bpe). Empty = the snapshot loads as it is.
    /// </summary>
    public static List<string> MissingForLoad(string snapshot)
    {
        var missing = new List<string>();
        if (!Has(snapshot, "config.json")) missing.Add("config.json");
        if (!Has(snapshot, ModelFiles.SingleWeights))
        {
            if (!Has(snapshot, ModelFiles.WeightsIndex)) missing.Add($"{ModelFiles.SingleWeights} (or {ModelFiles.WeightsIndex} and its shards)");
            else
                foreach (string shard in ModelFiles.ShardsOf(Path.Combine(snapshot, ModelFiles.WeightsIndex)))
                    if (!Has(snapshot, shard)) missing.Add(shard);
        }
        if (!Has(snapshot, "tokenizer.json") && !Has(snapshot, "tokenizer.model") && !Has(snapshot, "vocab.txt")
            && !(Has(snapshot, "encoder.json") && Has(snapshot, "vocab.bpe")))
            missing.Add("a tokenizer (tokenizer.json, tokenizer.model or vocab.txt)");
        return missing;
    }

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitPattern();
}

/// <summary>Which files of a Hub repository a model load reads (never pickles such as pytorch_model.bin).</summary>
internal static partial class ModelFiles
{
    public const string SingleWeights = "model.safetensors";
    public const string WeightsIndex = "model.safetensors.index.json";

    /// <summary>Settings and tokenizer files taken when the repository has them.</summary>
    public static readonly string[] Optional =
    [
        "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt", "special_tokens_map.json",
        "added_tokens.json", "vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "generation_config.json",
        "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "ullme.json",
    ];

    /// <summary>The files to fetch from a repository holding <paramref name="siblings"/>, before the shards of an
    /// index are known: config.json, the single weights file or the index, and the optional files present.</summary>
    public static List<string> Select(IReadOnlyCollection<string> siblings, HubModelId id, string where)
    {
        var set = new HashSet<string>(siblings, StringComparer.Ordinal);
        if (!set.Contains("config.json"))
            throw new UllmeException($"The Hugging Face repository '{id}' has no config.json at {where}: it is not a transformers model this loader reads (files: {Listed(siblings)}).");
        var files = new List<string> { "config.json" };
        if (set.Contains(SingleWeights)) files.Add(SingleWeights);
        else if (set.Contains(WeightsIndex)) files.Add(WeightsIndex);
        else
        {
            bool pickles = siblings.Any(s => s.EndsWith(".bin", StringComparison.Ordinal) || s.EndsWith(".pt", StringComparison.Ordinal) || s.EndsWith(".pth", StringComparison.Ordinal));
            throw new UllmeException($"The Hugging Face repository '{id}' has no {SingleWeights} or {WeightsIndex} at {where} (files: {Listed(siblings)})." +
                (pickles ? " PyTorch pickle checkpoints (pytorch_model.bin) are never loaded: pick a revision with safetensors weights (often refs/pr/N of the 'Adding `safetensors` variant' pull request) or convert it." : ""));
        }
        files.AddRange(Optional.Where(set.Contains));
        // sentence-transformers pooling settings (1_Pooling/config.json)
        files.AddRange(siblings.Where(s => PoolingConfigPattern().IsMatch(s)).Order(StringComparer.Ordinal));
        return files;
    }

    /// <summary>The shard files named by an index's weight_map, each once, in order of first appearance.</summary>
    public static List<string> ShardsOf(string indexFile)
    {
        using var doc = ModelFileGuard.ParseJson(indexFile, ModelFileGuard.ConfigFileMaxBytes);
        if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new UllmeException($"'{indexFile}' has no \"weight_map\" object.");
        var shards = new List<string>();
        foreach (var entry in map.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new UllmeException($"'{indexFile}': \"weight_map\".\"{entry.Name}\" must be a file name string.");
            string shard = entry.Value.GetString()!;
            if (!IsSafeRelative(shard))
                throw new UllmeException($"'{indexFile}': shard '{shard}' (for tensor '{entry.Name}') lies outside the model folder.");
            if (!shards.Contains(shard)) shards.Add(shard);
        }
        return shards;
    }

    /// <summary>A path inside the repository: relative, '/'-separated, no empty, '.' or '..' part.</summary>
    public static bool IsSafeRelative(string path) =>
        path.Length is > 0 and < 1000 && !path.StartsWith('/') && !path.Contains('\\') && !path.Contains(':')
        && path.Split('/').All(p => p.Length > 0 && p != "." && p != "..");

    private static string Listed(IReadOnlyCollection<string> siblings) =>
        siblings.Count == 0 ? "none" : string.Join(", ", siblings.Take(12)) + (siblings.Count > 12 ? $", … {siblings.Count - 12} more" : "");

    [GeneratedRegex("^[0-9]+_Pooling/config\\.json$")]
    private static partial Regex PoolingConfigPattern();
}
