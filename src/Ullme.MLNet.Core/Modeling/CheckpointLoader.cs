using System.Text.Json;
using Microsoft.Extensions.Logging;
using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// Loads Hugging Face weights into an <see cref="EmbeddingBackbone"/>. Module parameter names equal checkpoint keys
/// (after <see cref="EmbeddingBackbone.MapCheckpointKey"/>), so loading is a strict name-by-name copy:
/// <list type="bullet">
/// <item>every checkpoint key must name a parameter or persistent buffer of the module, unless the module declares it
/// ignorable (<see cref="EmbeddingBackbone.IsIgnorableCheckpointKey"/>);</item>
/// <item>every parameter/buffer must be present in the checkpoint (tied aliases count once; ignorable names may be
/// absent), with the same shape.</item>
/// </list>
/// All problems are collected from the headers before any data is read and reported together. Tensors are then read
/// one at a time and copied into the module's existing parameters (so <c>Parameter</c> objects held by optimizers or
/// adapters stay valid), converting to the module's dtype: peak memory is the model plus one tensor.
/// </summary>
internal static class CheckpointLoader
{
    /// <summary>HF's single-file weights name.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>HF's index for sharded weights (maps each tensor name to its shard file in <c>weight_map</c>).</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>How many problems of each kind an error message lists before summarising the rest.</summary>
    private const int MaxListed = 5;

    /// <summary>
    /// Finds <c>model.safetensors</c>, or <c>model.safetensors.index.json</c> and its shards, in
    /// <paramref name="folder"/> and loads every parameter and buffer of <paramref name="module"/>. Floating
    /// parameters end up in <paramref name="dtype"/> on <paramref name="device"/>; integer buffers keep their type.
    /// </summary>
    /// <exception cref="UllmeException">Files missing or malformed, or names/shapes that do not match the model.
    /// The module may then be partially loaded and should be disposed.</exception>
    /// <exception cref="UllmeException">A tensor holds NaN or infinite values (the tensor is named).</exception>
    public static void Load(EmbeddingBackbone module, string folder, ScalarType dtype, Device device)
    {
        ArgumentNullException.ThrowIfNull(module);
        using var checkpoint = Open(folder);
        Load(module, checkpoint, dtype, device, WeightChecks.Default);
    }

    /// <summary>Opens the checkpoint of a folder and validates its headers, reading no tensor data: the caller can
    /// check the tensors' names and shapes (<see cref="OpenedCheckpoint.Headers"/>) before building a module.</summary>
    internal static OpenedCheckpoint Open(string folder)
    {
        var files = OpenCheckpoint(folder);
        string description = files.Count == 1 ? $"'{files[0].File.Path}'" : $"the {files.Count} shards of '{System.IO.Path.Combine(folder, IndexFileName)}'";
        return new OpenedCheckpoint(files, description);
    }

    /// <summary>Loads an <see cref="Open"/>ed checkpoint into <paramref name="module"/>.</summary>
    internal static void Load(EmbeddingBackbone module, OpenedCheckpoint checkpoint, ScalarType dtype, Device device, WeightChecks checks)
    {
        ArgumentNullException.ThrowIfNull(module);
        var sources = new List<Source>();
        foreach (var (file, names) in checkpoint.Files)
        {
            foreach (var name in names)
            {
                var info = file.Tensors[name];
                sources.Add(new Source(name, info.Shape, info.ScalarType, file.Path, () => file.Read(name), t => file.ReadInto(name, t)));
            }
        }
        LoadCore(module, sources, checkpoint.Description, dtype, device, checks);
    }

    /// <summary>
    /// Same as <see cref="Load(EmbeddingBackbone, string, ScalarType, Device)"/> but from tensors already in memory (e.g. weights converted from another format).
    /// <paramref name="source"/> names their origin in error messages. The tensors are not disposed.
    /// </summary>
    public static void LoadStateDict(EmbeddingBackbone module, IReadOnlyDictionary<string, Tensor> tensors, string source, ScalarType dtype, Device device) =>
        LoadStateDict(module, tensors, source, dtype, device, WeightChecks.Default);

    internal static void LoadStateDict(EmbeddingBackbone module, IReadOnlyDictionary<string, Tensor> tensors, string source, ScalarType dtype, Device device, WeightChecks checks)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(tensors);
        var sources = tensors.Select(kv => new Source(kv.Key, kv.Value.shape, kv.Value.dtype, source, () => kv.Value, null)).ToList();
        LoadCore(module, sources, $"'{source}'", dtype, device, checks);
    }

    /// <summary>One checkpoint tensor: its key, shape, stored dtype and file, and how to read it (a tensor created
    /// inside the reading dispose scope is freed after the copy; a caller's in-memory tensor is returned as is).
    /// <paramref name="ReadInto"/>, when set, fills a same-dtype CPU tensor in place without a temporary.</summary>
    private sealed record Source(string Key, long[] Shape, ScalarType DType, string File, Func<Tensor> Read, Action<Tensor>? ReadInto);

    private static void LoadCore(EmbeddingBackbone module, List<Source> sources, string description, ScalarType dtype, Device device, WeightChecks checks)
    {
        if (!SafeTensorsDType.IsFloating(dtype))
            throw new ArgumentException($"Model dtype must be a floating type, not {dtype}.", nameof(dtype));

        // Convert the module first (a no-op when it is already right), so checkpoint tensors are copied straight into
        // their final storage and the Parameter objects we fill are the ones the module keeps.
        module.to(device, dtype);

        // Module names; tied parameters (one tensor under several names) form one group that any of its names fills.
        var expected = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, tensor) in module.state_dict()) expected.TryAdd(name, tensor);
        var groupOf = expected.ToDictionary(kv => kv.Key, kv => StorageKey(kv.Value));

        var problems = new Problems();
        var plan = new List<(Source Source, string Name)>();
        var filledBy = new Dictionary<string, Source>(StringComparer.Ordinal);
        foreach (var s in sources)
        {
            string mapped = module.MapCheckpointKey(s.Key);
            if (module.IsIgnorableCheckpointKey(s.Key) || module.IsIgnorableCheckpointKey(mapped)) continue;
            string shown = mapped == s.Key ? $"'{s.Key}'" : $"'{s.Key}' (parameter '{mapped}')";
            if (!expected.TryGetValue(mapped, out var target))
            {
                problems.Unexpected.Add($"unexpected tensor {shown} in file '{s.File}' (the model has no such parameter)");
                continue;
            }
            if (filledBy.TryGetValue(mapped, out var earlier))
            {
                problems.Duplicate.Add($"tensor {shown} in file '{s.File}' fills parameter '{mapped}', already filled by '{earlier.Key}' in file '{earlier.File}'");
                continue;
            }
            filledBy[mapped] = s;
            if (!s.Shape.SequenceEqual(target.shape))
            {
                problems.Mismatch.Add($"tensor {shown} in file '{s.File}' has shape {SafeTensorInfo.FormatShape(s.Shape)} in file vs {SafeTensorInfo.FormatShape(target.shape)} expected by the model");
                continue;
            }
            if (SafeTensorsDType.IsFloating(s.DType) != SafeTensorsDType.IsFloating(target.dtype))
            {
                problems.Mismatch.Add($"tensor {shown} in file '{s.File}' holds {s.DType} values but the model's '{mapped}' is {target.dtype}");
                continue;
            }
            plan.Add((s, mapped));
        }

        var filledGroups = filledBy.Keys.Select(k => groupOf[k]).ToHashSet();
        foreach (var name in expected.Keys)
        {
            if (filledGroups.Contains(groupOf[name]) || module.IsIgnorableCheckpointKey(name)) continue;
            problems.Missing.Add($"tensor '{name}' is missing from {description}");
        }

        problems.ThrowIfAny(module.GetType().Name, description);

        CopyIntoModule(plan, expected, checks);
    }

    /// <summary>
    /// Reads each planned tensor and copies it into its parameter. A file tensor already in the parameter's dtype
    /// (on CPU) is read straight into the parameter. Otherwise it is read into a scratch buffer of its stored dtype,
    /// reused across tensors (fresh multi-MB allocations cost page faults on every tensor), and copy_ converts it.
    /// </summary>
    private static void CopyIntoModule(List<(Source Source, string Name)> plan, Dictionary<string, Tensor> expected, WeightChecks checks)
    {
        static bool InPlace(Source s, Tensor target) =>
            s.ReadInto is not null && target.device_type == DeviceType.CPU && target.dtype == s.DType && target.is_contiguous();

        var scratchSize = new Dictionary<ScalarType, long>();
        foreach (var (s, name) in plan)
        {
            if (s.ReadInto is null || InPlace(s, expected[name])) continue;
            long n = s.Shape.Aggregate(1L, (a, b) => a * b);
            scratchSize[s.DType] = Math.Max(n, scratchSize.GetValueOrDefault(s.DType));
        }

        var scratch = new Dictionary<ScalarType, Tensor>();
        try
        {
            using var noGrad = torch.no_grad();
            foreach (var (s, name) in plan)
            {
                var target = expected[name];
                using var scope = torch.NewDisposeScope();
                try
                {
                    if (InPlace(s, target))
                    {
                        s.ReadInto!(target); // bytes go straight into the parameter: no temporary, no extra copy
                        CheckFinite(target, s, checks);
                        continue;
                    }
                    Tensor value;
                    if (s.ReadInto is not null)
                    {
                        if (!scratch.TryGetValue(s.DType, out var buffer))
                        {
                            buffer = torch.empty(scratchSize[s.DType], dtype: s.DType, device: CPU).DetachFromDisposeScope();
                            scratch.Add(s.DType, buffer);
                        }
                        value = buffer.narrow(0, 0, s.Shape.Aggregate(1L, (a, b) => a * b)).view(s.Shape);
                        s.ReadInto(value);
                    }
                    else
                    {
                        value = s.Read();
                    }
                    target.copy_(value); // converts dtype and device; keeps the Parameter object
                    CheckFinite(target, s, checks);
                }
                catch (Exception e) when (e is not UllmeException)
                {
                    throw new UllmeException($"Cannot load tensor '{s.Key}' from '{s.File}': {e.Message}", e);
                }
            }
        }
        finally
        {
            foreach (var t in scratch.Values) t.Dispose();
        }
    }

    /// <summary>
    /// Refuses (or, when the caller allows it, logs a warning about) a loaded tensor holding NaN or infinite values:
    /// they would make every embedding NaN without a word. Checked a chunk at a time (a bool temporary of at most
    /// <see cref="FiniteCheckChunk"/> elements), once per tensor right after its copy.
    /// </summary>
    private static void CheckFinite(Tensor target, Source s, WeightChecks checks)
    {
        if (!checks.CheckFinite || !target.is_floating_point() || target.numel() == 0) return;
        using var scope = torch.NewDisposeScope();
        Tensor flat = target.is_contiguous() ? target.view(-1) : target.reshape(-1);
        long total = flat.numel();
        long bad = 0, nan = 0;
        for (long start = 0; start < total; start += FiniteCheckChunk)
        {
            using var inner = torch.NewDisposeScope();
            Tensor part = flat.narrow(0, start, Math.Min(FiniteCheckChunk, total - start));
            if (part.isfinite().all().item<bool>()) continue;
            bad += part.isfinite().logical_not().sum().item<long>();
            nan += part.isnan().sum().item<long>();
        }
        if (bad == 0) return;
        string what = $"tensor '{s.Key}' in '{s.File}' holds {bad:N0} non-finite values ({nan:N0} NaN, {bad - nan:N0} infinite) of {total:N0}";
        if (!checks.AllowNonFinite)
            throw new UllmeException($"The weights are damaged: {what}; every embedding would be NaN. (Set ModelLoadOptions.AllowNonFiniteWeights to load them anyway.)");
        checks.Logger?.LogWarning("Loading non-finite weights as allowed: {What}.", what);
    }

    /// <summary>Elements checked per step by <see cref="CheckFinite"/>.</summary>
    private const long FiniteCheckChunk = 1L << 24;

    /// <summary>Identifies the memory a tensor views, so tied parameters (several names, one tensor) are recognised
    /// even when each name wraps its own Tensor object.</summary>
    private static (nint Address, long Count) StorageKey(Tensor t)
    {
        if (t.numel() == 0 || !t.is_contiguous() || t.device_type != DeviceType.CPU)
            return (t.Handle, -1); // no CPU memory to compare: fall back to the native tensor handle
        using var flat = t.view(-1);
        using var first = flat.narrow(0, 0, 1);
        unsafe
        {
            fixed (byte* p = first.bytes) return ((nint)p, t.numel());
        }
    }

    /// <summary>Opens the checkpoint files of a folder; returns each file with the tensor names to take from it.</summary>
    private static List<(SafeTensorsFile File, IReadOnlyList<string> Names)> OpenCheckpoint(string folder)
    {
        if (!Directory.Exists(folder))
            throw new UllmeException($"Model folder '{folder}' does not exist.");

        string single = System.IO.Path.Combine(folder, SingleFileName);
        string index = System.IO.Path.Combine(folder, IndexFileName);
        if (IO.ModelFileGuard.Exists(single, IO.ModelFileGuard.Unbounded))
        {
            var file = SafeTensorsFile.Open(single);
            return [(file, file.Tensors.Keys.ToList())];
        }
        if (!IO.ModelFileGuard.Exists(index, IO.ModelFileGuard.ConfigFileMaxBytes))
        {
            var present = Directory.EnumerateFiles(folder).Select(System.IO.Path.GetFileName)
                .Where(n => n is not null && (n.EndsWith(".safetensors", StringComparison.Ordinal) || n.EndsWith(".gguf", StringComparison.Ordinal) || IsPickle(n)))
                .Order(StringComparer.Ordinal).Take(5).ToList();
            string found = present.Count == 0 ? "no weight files at all" : "only " + string.Join(", ", present.Select(p => $"'{p}'"));
            if (present.Any(n => IsPickle(n!)))
                throw new UllmeException($"No {SingleFileName} or {IndexFileName} in '{folder}' (found {found}). PyTorch pickle checkpoints " +
                    "(pytorch_model.bin, *.pt, *.pth, *.ckpt) are never loaded: unpickling runs whatever code the file holds. Convert the model to safetensors, " +
                    "e.g. python -c \"from transformers import AutoModel; AutoModel.from_pretrained('DIR').save_pretrained('DIR', safe_serialization=True)\" " +
                    "or python -c \"import torch; from safetensors.torch import save_file; save_file(torch.load('DIR/pytorch_model.bin', weights_only=True), 'DIR/model.safetensors')\".");
            throw new UllmeException($"No {SingleFileName} or {IndexFileName} in '{folder}' (found {found}). Weights must be in Hugging Face safetensors format.");
        }

        var shardNames = ReadIndex(index, folder);
        var opened = new List<(SafeTensorsFile File, IReadOnlyList<string> Names)>();
        try
        {
            foreach (var (shard, names) in shardNames)
            {
                string shardPath = System.IO.Path.Combine(folder, shard);
                if (!IO.ModelFileGuard.Exists(shardPath, IO.ModelFileGuard.Unbounded))
                    throw new UllmeException($"Shard '{shard}' named by '{index}' (for tensor '{names[0]}'{(names.Count > 1 ? $" and {names.Count - 1} more" : "")}) does not exist in '{folder}'.");
                var file = SafeTensorsFile.Open(shardPath);
                opened.Add((file, file.Tensors.Keys.ToList()));
                foreach (var name in names)
                    if (!file.Tensors.ContainsKey(name))
                        throw new UllmeException($"Tensor '{name}' is not in shard '{shardPath}', where '{index}' says it is.");
            }
            return opened;
        }
        catch
        {
            foreach (var (file, _) in opened) file.Dispose();
            throw;
        }
    }

    /// <summary>Reads <c>weight_map</c> of an index: shard file → the tensor names it must hold (shards in first-seen order).</summary>
    private static List<(string Shard, List<string> Names)> ReadIndex(string index, string folder)
    {
        using (var doc = IO.ModelFileGuard.ParseJson(index, IO.ModelFileGuard.ConfigFileMaxBytes))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new UllmeException($"'{index}' has no \"weight_map\" object (tensor name -> shard file).");

            var shards = new List<(string Shard, List<string> Names)>();
            var byShard = new Dictionary<string, List<string>>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String || string.IsNullOrWhiteSpace(entry.Value.GetString()))
                    throw new UllmeException($"'{index}': weight_map entry for tensor '{entry.Name}' is not a file name.");
                string shard = entry.Value.GetString()!;
                if (IO.PathGuard.ResolveInside(folder, shard) is null)
                    throw new UllmeException($"'{index}': shard '{shard}' for tensor '{entry.Name}' lies outside the model folder.");
                if (!byShard.TryGetValue(shard, out var names))
                {
                    names = [];
                    byShard.Add(shard, names);
                    shards.Add((shard, names));
                }
                names.Add(entry.Name);
            }
            if (shards.Count == 0)
                throw new UllmeException($"'{index}' has an empty \"weight_map\".");
            return shards;
        }
    }

    private static bool IsPickle(string name) =>
        name.EndsWith(".bin", StringComparison.Ordinal) || name.EndsWith(".pt", StringComparison.Ordinal)
        || name.EndsWith(".pth", StringComparison.Ordinal) || name.EndsWith(".ckpt", StringComparison.Ordinal)
        || name.EndsWith(".pkl", StringComparison.Ordinal);

    private sealed class Problems
    {
        public List<string> Unexpected { get; } = [];
        public List<string> Missing { get; } = [];
        public List<string> Mismatch { get; } = [];
        public List<string> Duplicate { get; } = [];

        public void ThrowIfAny(string model, string description)
        {
            var all = new List<string>();
            Add(all, Mismatch, "shape or type mismatches");
            Add(all, Missing, "missing tensors");
            Add(all, Unexpected, "unexpected tensors");
            Add(all, Duplicate, "duplicate tensors");
            if (all.Count == 0) return;
            int count = Unexpected.Count + Missing.Count + Mismatch.Count + Duplicate.Count;
            string head = count == 1
                ? $"The checkpoint {description} does not match the {model}: "
                : $"The checkpoint {description} does not match the {model} ({count} problems): ";
            throw new UllmeException(head + string.Join("; ", all) + ".");
        }

        private static void Add(List<string> all, List<string> items, string what)
        {
            all.AddRange(items.Take(MaxListed));
            if (items.Count > MaxListed) all.Add($"and {items.Count - MaxListed} more {what}");
        }
    }
}

/// <summary>What to do with weights that are not finite (NaN/Inf): refuse (the default) or load them and warn.</summary>
internal sealed record WeightChecks(bool AllowNonFinite, ILogger? Logger, bool CheckFinite = true)
{
    /// <summary>Refuse non-finite weights.</summary>
    public static readonly WeightChecks Default = new(false, null);

    /// <summary>No check: for copies of weights already in memory (they were checked when they were loaded).</summary>
    public static readonly WeightChecks None = new(true, null, CheckFinite: false);
}

/// <summary>The opened files of a checkpoint, headers validated, no tensor data read yet.</summary>
internal sealed class OpenedCheckpoint : IDisposable
{
    internal OpenedCheckpoint(List<(SafeTensorsFile File, IReadOnlyList<string> Names)> files, string description)
    {
        Files = files;
        Description = description;
        var headers = new List<(string Key, long[] Shape, string File)>();
        long largest = 0;
        foreach (var (file, names) in files)
            foreach (var name in names)
            {
                var info = file.Tensors[name];
                headers.Add((name, info.Shape, file.Path));
                largest = Math.Max(largest, info.ByteLength);
            }
        Headers = headers;
        LargestTensorBytes = largest;
    }

    public List<(SafeTensorsFile File, IReadOnlyList<string> Names)> Files { get; }

    /// <summary>"'path'" or "the N shards of 'index'", for messages.</summary>
    public string Description { get; }

    /// <summary>Every tensor the checkpoint holds: key, shape, file.</summary>
    public IReadOnlyList<(string Key, long[] Shape, string File)> Headers { get; }

    /// <summary>Bytes of the largest stored tensor (the conversion buffer loading may need).</summary>
    public long LargestTensorBytes { get; }

    public void Dispose()
    {
        foreach (var (file, _) in Files) file.Dispose();
    }
}
