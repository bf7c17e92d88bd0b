using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using TorchSharp;
using TorchSharp.Modules;
using Ullme.MLNet.IO;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>Which weights a training checkpoint holds.</summary>
internal enum CheckpointWeights
{
    /// <summary>Only the LoRA adapter parameters (the base is re-loaded from the model folder).</summary>
    Adapter,

    /// <summary>Every trained parameter (full fine-tuning).</summary>
    Full,
}

/// <summary>Where a run stands, saved with every checkpoint (<c>state.json</c>).</summary>
internal sealed record TrainingCheckpointState
{
    /// <summary>Optimizer steps completed (the scheduler's position).</summary>
    public required int Step { get; init; }

    /// <summary>The epoch of the next batch.</summary>
    public required int Epoch { get; init; }

    /// <summary>Examples of <see cref="Epoch"/> already consumed (in the seeded epoch order).</summary>
    public required int PositionInEpoch { get; init; }

    /// <summary>Steps skipped for NaN/∞ so far.</summary>
    public int StepsSkipped { get; init; }

    public required int Seed { get; init; }

    /// <summary>What the weights file holds.</summary>
    public required CheckpointWeights Weights { get; init; }

    /// <summary>A digest of the run's settings; resuming with different settings is refused.</summary>
    public string Fingerprint { get; init; } = "";

    /// <summary>The last loss terms, for the record.</summary>
    public IReadOnlyDictionary<string, double>? LastLosses { get; init; }
}

/// <summary>
/// Training checkpoints that survive a kill at any moment and are never resumed when damaged.
/// <para>
/// Writing: a checkpoint is written completely into a temporary folder next to its final place (weights, optimizer
/// state, RNG state, <c>state.json</c>, each flushed to disk), then <c>manifest.json</c> is written last: the length
/// and SHA-256 of every file. Only then is the folder renamed to <c>checkpoint-NNNNNNN</c> (a rename within one
/// folder is atomic). Older checkpoints are pruned only after the new one is committed, so the previous valid
/// checkpoint exists until then; re-saving a step moves the old folder aside (<c>.superseded-</c>, still a valid
/// candidate) before the new one is renamed into place. Half-written temporary folders are ignored and removed by the
/// next save; folders being pruned are renamed to a temporary name first, so a half-deleted checkpoint is never seen.
/// </para>
/// <para>
/// Resuming: <see cref="FindLatest"/> takes the newest checkpoint whose manifest validates (every listed file present
/// with its length and SHA-256, the required files listed); a damaged one (bit flip, truncation, missing manifest or
/// file) is reported through the logger with the reason and skipped, and the next older one is tried.
/// <see cref="Restore"/> validates again before touching any tensor.
/// </para>
/// <para>
/// Files: <c>weights.bin</c> (named tensors, TorchSharp's tensor format), <c>optimizer.bin</c> (TorchSharp's
/// optimizer state: Adam moments and step counts), <c>rng.bin</c> (torch's global CPU generator),
/// <c>state.json</c> (<see cref="TrainingCheckpointState"/>) and <c>manifest.json</c>. These are for resuming;
/// exporting a model is separate. Checkpoints written before manifests existed are skipped as invalid.
/// </para>
/// </summary>
internal static class TrainingCheckpoint
{
    public const string FolderPrefix = "checkpoint-";
    private const string TempMarker = ".tmp-", SupersededMarker = ".superseded-";
    private const string WeightsFile = "weights.bin", OptimizerFile = "optimizer.bin", RngFile = "rng.bin", StateFile = "state.json";
    private const string ManifestFile = "manifest.json";
    private const string ManifestFormat = "ullme-training-checkpoint";
    private const int ManifestVersion = 1;
    private const long MaxManifestBytes = 1 << 20;
    private const string Magic = "ULLME-TRAINING-WEIGHTS-1";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        // The last step's losses may be NaN/∞ (a skipped step); they must not make the checkpoint unwritable.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>
    /// Writes a checkpoint for <paramref name="state"/> into <paramref name="directory"/> and keeps the newest
    /// <paramref name="keepLast"/> checkpoints (checkpoints of later steps, left by a run that was resumed from an
    /// earlier one, are removed). Returns the checkpoint folder.
    /// </summary>
    public static string Save(string directory, TrainingCheckpointState state, IReadOnlyList<(string name, Tensor tensor)> weights,
        OptimizerHelper? optimizer, int keepLast = 2)
    {
        if (keepLast < 1) throw new UllmeException($"Checkpoints to keep must be at least 1, got {keepLast}.");
        Directory.CreateDirectory(directory);
        RemoveTemporaryFolders(directory);
        string final = Path.Combine(directory, FolderName(state.Step));
        string temp = final + TempMarker + Guid.NewGuid().ToString("N")[..8];
        Directory.CreateDirectory(temp);
        try
        {
            var files = new List<ManifestEntry>();
            files.Add(WriteFile(temp, WeightsFile, w =>
            {
                w.Write(Magic);
                w.Write(weights.Count);
                foreach (var (name, tensor) in weights)
                {
                    w.Write(name);
                    using var cpu = tensor.detach().cpu().contiguous();
                    cpu.Save(w);
                }
            }));
            FaultInjection.Reach("checkpoint-files");
            if (optimizer is not null) files.Add(WriteFile(temp, OptimizerFile, optimizer.save_state_dict));
            files.Add(WriteFile(temp, RngFile, w =>
            {
                using var rng = get_rng_state();
                rng.Save(w);
            }));
            files.Add(WriteFile(temp, StateFile, w => w.Write(JsonSerializer.SerializeToUtf8Bytes(state, Json))));
            var manifest = new CheckpointManifest { Format = ManifestFormat, FormatVersion = ManifestVersion, Step = state.Step, Files = files };
            WriteFile(temp, ManifestFile, w => w.Write(JsonSerializer.SerializeToUtf8Bytes(manifest, Json)));
            FaultInjection.Reach("checkpoint-commit");

            // Re-saving a step (after a resume): the old one is moved aside first (under a name that keeps it a valid
            // candidate until the new one is in place), then dropped.
            string? old = AtomicFolder.Publish(temp, final, replaced: final + SupersededMarker + Guid.NewGuid().ToString("N")[..8],
                afterMoveAside: () => FaultInjection.Reach("checkpoint-swap"), keepReplaced: true);
            if (old is not null) DeleteFolder(old);
        }
        catch
        {
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }

        FaultInjection.Reach("checkpoint-prune");
        var all = ListCheckpoints(directory);
        foreach (var stale in all.Where(c => c.superseded || c.step > state.Step))
            DeleteFolder(stale.path);
        foreach (var stale in all.Where(c => !c.superseded && c.step <= state.Step).SkipLast(keepLast))
            DeleteFolder(stale.path);
        return final;
    }

    /// <summary>
    /// The newest checkpoint folder in <paramref name="directory"/> whose manifest validates (see
    /// <see cref="Validate"/>), or null. Every damaged checkpoint passed over is reported to
    /// <paramref name="logger"/> as a warning with its reason.
    /// </summary>
    public static string? FindLatest(string directory, ILogger? logger = null)
    {
        if (!Directory.Exists(directory)) return null;
        foreach (var (_, path, _) in ListCheckpoints(directory).AsEnumerable().Reverse())
        {
            string? problem = Validate(path);
            if (problem is null) return path;
            logger?.LogWarning("Skipping damaged checkpoint '{Checkpoint}': {Problem}", path, problem);
        }
        return null;
    }

    /// <summary>
    /// Checks a checkpoint folder against its <c>manifest.json</c>: the manifest parses and names this format, the
    /// weights, RNG and state files are listed, and every listed file exists with the listed length and SHA-256 (and
    /// nothing else is in the folder). Returns null when the checkpoint is valid, else the reason.
    /// </summary>
    public static string? Validate(string checkpoint)
    {
        string manifestPath = Path.Combine(checkpoint, ManifestFile);
        if (!File.Exists(manifestPath))
            return $"no {ManifestFile} (the write was interrupted, or the checkpoint predates checksummed checkpoints)";
        CheckpointManifest? manifest;
        try
        {
            var info = new FileInfo(manifestPath);
            if (info.Length > MaxManifestBytes) return $"{ManifestFile} is {info.Length} bytes, more than a manifest can be";
            manifest = JsonSerializer.Deserialize<CheckpointManifest>(File.ReadAllBytes(manifestPath), Json);
        }
        catch (JsonException e)
        {
            return $"{ManifestFile} is not valid JSON ({e.Message})";
        }
        if (manifest is null || manifest.Format != ManifestFormat)
            return $"{ManifestFile} is not a training checkpoint manifest";
        if (manifest.FormatVersion != ManifestVersion)
            return $"{ManifestFile} has format version {manifest.FormatVersion}; this Ullme.MLNet reads version {ManifestVersion}";
        var listed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in manifest.Files ?? [])
        {
            if (f.Path is not (WeightsFile or OptimizerFile or RngFile or StateFile) || !listed.Add(f.Path))
                return $"{ManifestFile} lists an unexpected file '{f.Path}'";
        }
        foreach (string required in new[] { WeightsFile, RngFile, StateFile })
            if (!listed.Contains(required)) return $"{ManifestFile} does not list {required}";
        foreach (string file in Directory.EnumerateFiles(checkpoint).Select(Path.GetFileName).OfType<string>())
            if (file != ManifestFile && !listed.Contains(file)) return $"it holds '{file}', which its manifest does not list";
        foreach (var f in manifest.Files!)
        {
            string path = Path.Combine(checkpoint, f.Path);
            if (!File.Exists(path)) return $"{f.Path} is missing";
            long length = new FileInfo(path).Length;
            if (length != f.Length) return $"{f.Path} has {length} bytes, its manifest says {f.Length} (truncated or overwritten)";
            string sha = Sha256Of(path);
            if (!string.Equals(sha, f.Sha256, StringComparison.OrdinalIgnoreCase))
                return $"{f.Path} has SHA-256 {sha[..12]}…, its manifest says {(f.Sha256 ?? "")[..Math.Min(12, (f.Sha256 ?? "").Length)]}… (the file is damaged)";
        }
        if (manifest.Step != ReadStateUnchecked(Path.Combine(checkpoint, StateFile))?.Step)
            return $"{ManifestFile} is for step {manifest.Step}, {StateFile} for another";
        return null;
    }

    /// <summary>Reads <c>state.json</c> of a checkpoint folder.</summary>
    public static TrainingCheckpointState ReadState(string checkpoint)
    {
        string path = Path.Combine(checkpoint, StateFile);
        if (!File.Exists(path)) throw new UllmeException($"'{checkpoint}' is not a training checkpoint (no {StateFile}).");
        try
        {
            return JsonSerializer.Deserialize<TrainingCheckpointState>(File.ReadAllBytes(path), Json)
                ?? throw new UllmeException($"'{path}' is empty.");
        }
        catch (JsonException e)
        {
            throw new UllmeException($"'{path}' is not a valid checkpoint state: {e.Message}", e);
        }
    }

    /// <summary>
    /// Restores a checkpoint into live objects: copies the saved tensors into <paramref name="weights"/> (names,
    /// shapes and dtypes must match exactly), loads the optimizer state, and (optionally) torch's global RNG.
    /// </summary>
    /// <param name="checkpoint">The checkpoint folder.</param>
    /// <param name="weights">The tensors to fill, by name (the same list that was saved).</param>
    /// <param name="optimizer">The optimizer to restore (built over the same parameters in the same order), or null.</param>
    /// <param name="expectedFingerprint">If given, the checkpoint's settings digest must equal it.</param>
    /// <param name="restoreRng">Also restore torch's global generator.</param>
    public static TrainingCheckpointState Restore(string checkpoint, IReadOnlyList<(string name, Tensor tensor)> weights, OptimizerHelper? optimizer,
        string? expectedFingerprint = null, bool restoreRng = true)
    {
        if (Validate(checkpoint) is { } problem)
            throw new UllmeException($"Checkpoint '{checkpoint}' is damaged and cannot be resumed: {problem}.");
        var state = ReadState(checkpoint);
        if (expectedFingerprint is not null && state.Fingerprint != expectedFingerprint)
            throw new UllmeException($"Checkpoint '{checkpoint}' was written by a run with different settings (fingerprint {state.Fingerprint}, this run {expectedFingerprint}); resume with the original settings or start a new output folder.");

        string weightsPath = Path.Combine(checkpoint, WeightsFile);
        ReadFile(weightsPath, r =>
        {
            if (r.ReadString() != Magic) throw new UllmeException($"'{weightsPath}' is not a training weights file.");
            int count = r.ReadInt32();
            var byName = weights.ToDictionary(w => w.name, w => w.tensor);
            var seen = new HashSet<string>();
            for (int i = 0; i < count; i++)
            {
                string name = r.ReadString();
                using var saved = TensorExtensionMethods.Load(r);
                if (!byName.TryGetValue(name, out var target))
                    throw new UllmeException($"'{weightsPath}' holds tensor '{name}', which this model does not train.");
                if (!saved.shape.SequenceEqual(target.shape) || saved.dtype != target.dtype)
                    throw new UllmeException($"'{weightsPath}': tensor '{name}' is {saved.dtype} [{string.Join(", ", saved.shape)}], the model has {target.dtype} [{string.Join(", ", target.shape)}].");
                using (no_grad()) target.copy_(saved);
                seen.Add(name);
            }
            var missing = byName.Keys.Where(n => !seen.Contains(n)).ToList();
            if (missing.Count > 0)
                throw new UllmeException($"'{weightsPath}' lacks {missing.Count} trained tensor(s), e.g. '{missing[0]}'.");
        });

        if (optimizer is not null)
        {
            string optimizerPath = Path.Combine(checkpoint, OptimizerFile);
            if (!File.Exists(optimizerPath)) throw new UllmeException($"Checkpoint '{checkpoint}' has no optimizer state ({OptimizerFile}).");
            try
            {
                ReadFile(optimizerPath, optimizer.load_state_dict);
            }
            catch (Exception e) when (e is ArgumentException or InvalidDataException or EndOfStreamException)
            {
                throw new UllmeException($"'{optimizerPath}' does not fit this optimizer: {e.Message}", e);
            }
        }

        if (restoreRng)
        {
            string rngPath = Path.Combine(checkpoint, RngFile);
            ReadFile(rngPath, r =>
            {
                using var rng = TensorExtensionMethods.Load(r);
                set_rng_state(rng);
            });
        }
        return state;
    }

    private static string FolderName(int step) => $"{FolderPrefix}{step:D7}";

    /// <summary>Committed checkpoint folders (and ones moved aside by a re-save), oldest first; a superseded copy
    /// sorts before the committed folder of the same step.</summary>
    private static List<(int step, string path, bool superseded)> ListCheckpoints(string directory) =>
        Directory.GetDirectories(directory, FolderPrefix + "*")
            .Select(p => (name: Path.GetFileName(p), path: p))
            .Where(x => !x.name.Contains(TempMarker, StringComparison.Ordinal))
            .Select(x =>
            {
                int cut = x.name.IndexOf(SupersededMarker, StringComparison.Ordinal);
                string digits = cut < 0 ? x.name[FolderPrefix.Length..] : x.name[FolderPrefix.Length..cut];
                bool ok = digits.Length > 0 && digits.All(char.IsAsciiDigit) && int.TryParse(digits, out _);
                return (ok, step: ok ? int.Parse(digits, System.Globalization.CultureInfo.InvariantCulture) : 0, x.path, superseded: cut >= 0);
            })
            .Where(x => x.ok)
            .OrderBy(x => x.step).ThenBy(x => x.superseded ? 0 : 1)
            .Select(x => (x.step, x.path, x.superseded))
            .ToList();

    private static void RemoveTemporaryFolders(string directory)
    {
        foreach (var dir in Directory.GetDirectories(directory, FolderPrefix + "*" + TempMarker + "*"))
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>Deletes a checkpoint folder by renaming it to a temporary name first, so a kill half-way through the
    /// deletion leaves a temporary folder (removed by the next save), never a half-deleted checkpoint.</summary>
    private static void DeleteFolder(string path)
    {
        string doomed = path + TempMarker + "deleted-" + Guid.NewGuid().ToString("N")[..8];
        Directory.Move(path, doomed);
        try { Directory.Delete(doomed, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>Writes one file of a checkpoint (flushed to disk) and returns its manifest entry (length and SHA-256
    /// of the bytes written).</summary>
    private static ManifestEntry WriteFile(string folder, string name, Action<BinaryWriter> write)
    {
        using var stream = new FileStream(Path.Combine(folder, name), FileMode.CreateNew, FileAccess.Write, FileShare.None);
        using var hashing = new HashingWriteStream(stream);
        using (var writer = new BinaryWriter(hashing, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            write(writer);
            writer.Flush();
        }
        stream.Flush(flushToDisk: true);
        return new ManifestEntry { Path = name, Length = hashing.Length, Sha256 = hashing.HexHash() };
    }

    private static string Sha256Of(string path)
    {
        using var s = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }

    private static TrainingCheckpointState? ReadStateUnchecked(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<TrainingCheckpointState>(File.ReadAllBytes(path), Json);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private sealed class CheckpointManifest
    {
        public string? Format { get; set; }
        public int FormatVersion { get; set; }
        public int Step { get; set; }
        public List<ManifestEntry>? Files { get; set; }
    }

    private sealed class ManifestEntry
    {
        public string Path { get; set; } = "";
        public long Length { get; set; }
        public string? Sha256 { get; set; }
    }

    /// <summary>A write-only pass-through stream that counts and hashes what goes through it.</summary>
    private sealed class HashingWriteStream(Stream inner) : Stream
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public override long Length => _length;
        private long _length;

        public string HexHash() => Convert.ToHexStringLower(_hash.GetCurrentHash());

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            inner.Write(buffer);
            _hash.AppendData(buffer);
            _length += buffer.Length;
        }

        public override void WriteByte(byte value) => Write([value]);
        public override void Flush() => inner.Flush();
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) _hash.Dispose();
            base.Dispose(disposing);
        }
    }

    private static void ReadFile(string path, Action<BinaryReader> read)
    {
        if (!File.Exists(path)) throw new UllmeException($"Missing checkpoint file '{path}'.");
        using var stream = File.OpenRead(path);
        using var reader = new BinaryReader(stream, System.Text.Encoding.UTF8);
        try
        {
            read(reader);
        }
        catch (EndOfStreamException e)
        {
            throw new UllmeException($"'{path}' is truncated.", e);
        }
    }
}
