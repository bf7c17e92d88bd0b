using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// Settings of the <c>UllmeEmbed</c> transform: which model, how texts become vectors (pooling, attention, instruction,
/// truncation, normalisation), how much is computed at once (batch size, read-ahead window) and where (dtype, device),
/// and which columns are read and written. Everything is validated by <see cref="Validate"/> before any model is
/// loaded, with errors naming the offending option. Null members take the model's own defaults.
/// </summary>
public sealed class UllmeEmbeddingOptions : IModelOptions<UllmeEmbeddingOptions>
{
    /// <summary>A Hugging Face model folder (config.json, safetensors, tokenizer files) or <c>"default"</c> for the
    /// bundled all-MiniLM-L6-v2.</summary>
    public string Model { get; set; } = UllmeModel.DefaultModelName;

    /// <summary>Text column to embed. Default <c>"Text"</c>.</summary>
    public string InputColumnName { get; set; } = "Text";

    /// <summary>Vector column to write (<c>Vector&lt;Single, D&gt;</c>). Default <c>"Features"</c>, ready for trainers.</summary>
    public string OutputColumnName { get; set; } = "Features";

    /// <summary>Pooling; null = the model's default (mean).</summary>
    public PoolingMode? Pooling { get; set; }

    /// <summary>Attention mode for decoders; null = the model's default (bidirectional). Encoders ignore it.</summary>
    public AttentionMode? Attention { get; set; }

    /// <summary>Instruction prepended to every text; attended to, excluded from pooling. Null = none.</summary>
    public string? Instruction { get; set; }

    /// <summary>Maximum tokens per text including special tokens; null = the model's default. Longer texts are truncated.</summary>
    public int? MaxLength { get; set; }

    /// <summary>Texts per forward pass: bounds activation memory. Default 32.</summary>
    public int BatchSize { get; set; } = 32;

    /// <summary>
    /// Rows the cursor reads ahead from its input before embedding them in one engine call. Inside that window
    /// the engine sorts texts by length to cut padding; output order is preserved. Null = 8 × <see cref="BatchSize"/>
    /// (the engine's own default sort window).
    /// </summary>
    public int? ReadAheadRows { get; set; }

    /// <summary>Precision of weights and matmuls. Default float32.</summary>
    public ModelDType DType { get; set; } = ModelDType.Float32;

    /// <summary>What runs the model: <see cref="InferenceBackend.Torch"/> (default) or
    /// <see cref="InferenceBackend.OnnxRuntime"/> (the folder's exported model.onnx, or the model exported in memory at
    /// the first fit; a saved pipeline's zip then carries the ONNX model instead of safetensors).</summary>
    public InferenceBackend Backend { get; set; } = InferenceBackend.Torch;

    /// <summary>"cpu", "cuda" or "cuda:N"; null = from the MLContext (<c>GpuDeviceId</c> → "cuda:N", falling back
    /// to the CPU when <c>FallbackToCpu</c> is set and CUDA is unavailable; otherwise "cpu").</summary>
    public string? Device { get; set; }

    /// <summary>L2-normalise the embeddings. Default true.</summary>
    public bool Normalize { get; set; } = true;

    /// <summary>A copy, so that later edits of the caller's object do not change a built estimator.</summary>
    public UllmeEmbeddingOptions Clone() => (UllmeEmbeddingOptions)MemberwiseClone();

    /// <summary>Rows per engine call.</summary>
    internal int EffectiveReadAhead => ReadAheadRows ?? 8 * BatchSize;

    /// <summary>The engine's view of these options.</summary>
    internal EmbeddingOptions ToEmbeddingOptions() => new()
    {
        Pooling = Pooling,
        Attention = Attention,
        Instruction = Instruction,
        MaxLength = MaxLength,
        BatchSize = BatchSize,
        Normalize = Normalize,
    };

    /// <summary>
    /// Checks every option without loading anything heavy. <paramref name="modelIsLoaded"/> skips the model-path
    /// checks when the caller supplies an already loaded model.
    /// </summary>
    /// <exception cref="UllmeException">An option is invalid; the message names it and its value.</exception>
    public void Validate(bool modelIsLoaded = false)
    {
        if (!modelIsLoaded)
        {
            ModelLoading.ValidatePath(Model, "UllmeEmbeddingOptions.Model");
        }
        if (string.IsNullOrWhiteSpace(InputColumnName))
            throw new UllmeException("UllmeEmbeddingOptions.InputColumnName is empty.");
        if (string.IsNullOrWhiteSpace(OutputColumnName))
            throw new UllmeException("UllmeEmbeddingOptions.OutputColumnName is empty.");
        if (ReadAheadRows is { } ra && ra < 1)
            throw new UllmeException($"UllmeEmbeddingOptions.ReadAheadRows must be at least 1, got {ra}.");
        // The engine's records own the rules (one message per invalid value on every surface); the name shown is ours.
        try
        {
            ToEmbeddingOptions().Validate();
            if (Device is not null) new ModelLoadOptions { DType = DType, Device = Device }.Validate();
            else OptionCheck.Defined(DType, "ModelLoadOptions.DType");
            OptionCheck.Defined(Backend, "ModelLoadOptions.Backend");
        }
        catch (UllmeException e) when (e.Option is not null)
        {
            throw e.Under(nameof(UllmeEmbeddingOptions));
        }
    }
}

/// <summary>Parses and picks devices: "cpu", "cuda", "cuda:N".</summary>
internal static class DeviceSpec
{
    public static bool IsValid(string device) => ModelLoadOptions.IsDevice(device);

    /// <summary>
    /// The device an ML.NET transform runs on: the explicit option if given, else the MLContext's GPU settings.
    /// <paramref name="warn"/> receives the reason when a requested GPU is replaced by the CPU.
    /// </summary>
    public static string Resolve(string? explicitDevice, int? gpuDeviceId, bool fallbackToCpu, Func<bool> cudaAvailable, Action<string> warn)
    {
        if (explicitDevice is not null) return explicitDevice.Trim().ToLowerInvariant();
        if (gpuDeviceId is not { } id) return "cpu";
        if (id < 0) throw new UllmeException($"MLContext.GpuDeviceId must be >= 0, got {id}.");
        if (cudaAvailable()) return $"cuda:{id}";
        if (fallbackToCpu)
        {
            warn($"MLContext.GpuDeviceId = {id} but CUDA is not available; FallbackToCpu is set, so embeddings run on the CPU.");
            return "cpu";
        }
        throw new UllmeException($"MLContext.GpuDeviceId = {id} but CUDA is not available in this process; set MLContext.FallbackToCpu = true to run on the CPU.");
    }
}
