using Microsoft.ML.OnnxRuntime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Onnx.Export;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Onnx.Runtime;

/// <summary>The ONNX Runtime backend the engine's loader finds by name (<c>OnnxBackendLocator</c>).</summary>
internal sealed class OnnxBackendFactory : IOnnxBackendFactory
{
    public EmbeddingBackbone Open(string onnxPath, ModelConfig config, EmbeddingDefaults defaults, ModelLoadOptions options)
    {
        var session = CreateSession(options, s => new InferenceSession(onnxPath, s), onnxPath);
        try
        {
            var settings = ReadSettings(session, onnxPath, config);
            return new OnnxBackbone(session, settings, onnxPath, !config.IsEncoder, onnxPath, null);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    public EmbeddingBackbone Export(EmbeddingBackbone torch, ModelConfig config, EmbeddingDefaults defaults, ModelLoadOptions options, string modelId)
    {
        var settings = OnnxGraphExport.Resolve(torch, defaults, new OnnxExportOptions());
        byte[] bytes = OnnxGraphExport.ToBytes(torch, config, settings, modelId);
        string source = $"{modelId} (exported in memory)";
        var session = CreateSession(options, s => new InferenceSession(bytes, s), source);
        return new OnnxBackbone(session, settings, source, !config.IsEncoder, null, bytes);
    }

    /// <summary>Session options of the backend: all graph optimisations, the load options' thread count (ONNX
    /// Runtime's default, one per core, when unset), CUDA when a cuda device is asked for.</summary>
    internal static SessionOptions Options(ModelLoadOptions options)
    {
        // Errors only: ONNX Runtime's own warnings would go to the console, which a library never writes to (its
        // errors become UllmeExceptions).
        var s = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        if (options.Threads is int threads)
        {
            s.IntraOpNumThreads = threads;
            s.InterOpNumThreads = 1;
        }
        string device = options.Device.Trim().ToLowerInvariant();
        if (device.StartsWith("cuda", StringComparison.Ordinal))
            s.AppendExecutionProvider_CUDA(device.Length > 5 ? int.Parse(device.AsSpan(5), System.Globalization.CultureInfo.InvariantCulture) : 0);
        return s;
    }

    private static InferenceSession CreateSession(ModelLoadOptions options, Func<SessionOptions, InferenceSession> create, string source)
    {
        using var s = Options(options);
        try
        {
            return create(s);
        }
        catch (OnnxRuntimeException e)
        {
            throw new UllmeException($"ONNX Runtime cannot load '{source}': {e.Message}", e);
        }
    }

    /// <summary>What the graph computes, from its metadata (ours) or, for a foreign graph, its interface.</summary>
    internal static OnnxGraphSettings ReadSettings(InferenceSession session, string source, ModelConfig config)
    {
        var inputs = session.InputMetadata.Keys.ToHashSet(StringComparer.Ordinal);
        var outputs = session.OutputMetadata.Keys.ToHashSet(StringComparer.Ordinal);
        foreach (var required in new[] { OnnxGraphExport.InputIds, OnnxGraphExport.AttentionMask })
            if (!inputs.Contains(required))
                throw new UllmeException($"'{source}' has no input '{required}' (inputs: {string.Join(", ", inputs)}); export it with `ullme export-onnx`.");
        foreach (var required in new[] { OnnxGraphExport.SentenceEmbedding, OnnxGraphExport.TokenEmbeddings })
            if (!outputs.Contains(required))
                throw new UllmeException($"'{source}' has no output '{required}' (outputs: {string.Join(", ", outputs)}); export it with `ullme export-onnx`.");
        var meta = session.ModelMetadata.CustomMetadataMap;
        string Get(string key) => meta.TryGetValue(key, out var v) ? v
            : throw new UllmeException($"'{source}' lacks the metadata '{key}' an Ullme.MLNet export writes; export it with `ullme export-onnx`.");
        var attention = OptionNames.Attention.Parse(Get("ullme.attention"), $"'{source}' metadata ullme.attention");
        var pooling = OptionNames.Pooling.Parse(Get("ullme.pooling"), $"'{source}' metadata ullme.pooling");
        bool normalize = Get("ullme.normalize") == "true";
        var quantize = OnnxNames.Quantize.Parse(Get("ullme.quantize"), $"'{source}' metadata ullme.quantize");
        var hiddenDims = session.OutputMetadata[OnnxGraphExport.SentenceEmbedding].Dimensions;
        int hidden = hiddenDims.Length == 2 && hiddenDims[1] > 0 ? hiddenDims[1] : config.HiddenSize;
        return new OnnxGraphSettings(attention, pooling, normalize, inputs.Contains(OnnxGraphExport.PoolingMask), quantize, 0, hidden);
    }
}
