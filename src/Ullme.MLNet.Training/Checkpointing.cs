using System.Text.Json;
using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>Which weights a training checkpoint holds.</summary>
public enum CheckpointWeights
{
    /// <summary>Only the LoRA adapter parameters (the base is re-loaded from the model folder).</summary>
    Adapter,

    /// <summary>Every trained parameter (full fine-tuning).</summary>
    Full,
}

/// <summary>Where a run stands, saved with every checkpoint (<c>state.json</c>).</summary>
public sealed record TrainingCheckpointState
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
/// Training checkpoints that survive a kill at any moment: a checkpoint is written completely into a temporary
/// folder next to its final place (weights, optimizer state, RNG state, then <c>state.json</c>, each flushed to
/// disk) and only then renamed to <c>checkpoint-NNNNNNN</c>. A rename within one folder is atomic, so a folder with
/// that name is always complete; half-written temporary folders are ignored and removed by the next save.
/// <para>
/// Files: <c>weights.bin</c> (named tensors, TorchSharp's tensor format), <c>optimizer.bin</c> (TorchSharp's
/// optimizer state: Adam moments and step counts), <c>rng.bin</c> (torch's global CPU generator) and
/// <c>state.json</c> (<see cref="TrainingCheckpointState"/>). These are for resuming; exporting a model is separate.
/// </para>
/// </summary>
public static class TrainingCheckpoint
{
    public const string FolderPrefix = "checkpoint-";
    private const string TempMarker = ".tmp-";
    private const string WeightsFile = "weights.bin", OptimizerFile = "optimizer.bin", RngFile = "rng.bin", StateFile = "state.json";
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
    /// <paramref name="keepLast"/> checkpoints. Returns the checkpoint folder.
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
            WriteFile(Path.Combine(temp, WeightsFile), w =>
            {
                w.Write(Magic);
                w.Write(weights.Count);
                foreach (var (name, tensor) in weights)
                {
                    w.Write(name);
                    using var cpu = tensor.detach().cpu().contiguous();
                    cpu.Save(w);
                }
            });
            if (optimizer is not null) WriteFile(Path.Combine(temp, OptimizerFile), optimizer.save_state_dict);
            WriteFile(Path.Combine(temp, RngFile), w =>
            {
                using var rng = get_rng_state();
                rng.Save(w);
            });
            WriteFile(Path.Combine(temp, StateFile), w => w.Write(JsonSerializer.SerializeToUtf8Bytes(state, Json)));

            if (Directory.Exists(final))
            {
                // Re-saving a step (after a resume): move the old one aside first, then drop it.
                string old = final + TempMarker + "old" + Guid.NewGuid().ToString("N")[..8];
                Directory.Move(final, old);
                Directory.Move(temp, final);
                Directory.Delete(old, recursive: true);
            }
            else
            {
                Directory.Move(temp, final);
            }
        }
        catch
        {
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }

        foreach (var stale in ListCheckpoints(directory).SkipLast(keepLast))
            Directory.Delete(stale.path, recursive: true);
        return final;
    }

    /// <summary>The newest complete checkpoint folder in <paramref name="directory"/>, or null.</summary>
    public static string? FindLatest(string directory) =>
        Directory.Exists(directory) ? ListCheckpoints(directory).Select(c => c.path).LastOrDefault() : null;

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

    private static List<(int step, string path)> ListCheckpoints(string directory) =>
        Directory.GetDirectories(directory, FolderPrefix + "*")
            .Select(p => (name: Path.GetFileName(p), path: p))
            .Where(x => !x.name.Contains(TempMarker, StringComparison.Ordinal))
            .Select(x => (ok: int.TryParse(x.name[FolderPrefix.Length..], out int s), step: s, x.path))
            .Where(x => x.ok && File.Exists(Path.Combine(x.path, StateFile)))
            .OrderBy(x => x.step)
            .Select(x => (x.step, x.path))
            .ToList();

    private static void RemoveTemporaryFolders(string directory)
    {
        foreach (var dir in Directory.GetDirectories(directory, FolderPrefix + "*" + TempMarker + "*"))
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static void WriteFile(string path, Action<BinaryWriter> write)
    {
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            write(writer);
            writer.Flush();
        }
        stream.Flush(flushToDisk: true);
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
