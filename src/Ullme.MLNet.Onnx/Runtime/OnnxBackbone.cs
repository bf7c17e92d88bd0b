using Microsoft.ML.OnnxRuntime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Onnx.Export;
using Ullme.MLNet.Pooling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Onnx.Runtime;

/// <summary>
/// An exported graph on ONNX Runtime behind the engine's backbone interface: <see cref="Forward"/> returns the
/// graph's <c>token_embeddings</c>, and <see cref="TryForwardPooled"/> its <c>sentence_embedding</c> when the call
/// asks for the pooling and normalisation baked into the graph (the engine pools the states itself otherwise). The
/// attention mode is fixed at export; a call asking for the other one is refused with the way out. Thread-safe
/// (ONNX Runtime sessions are).
/// </summary>
internal sealed class OnnxBackbone : EmbeddingBackbone
{
    private readonly InferenceSession _session;
    private readonly OnnxGraphSettings _settings;
    private readonly string _source;
    private readonly bool _isDecoder;
    private readonly string? _file;
    private readonly byte[]? _bytes;

    /// <param name="session">The session over the graph.</param>
    /// <param name="settings">What the graph computes.</param>
    /// <param name="source">The graph's name in messages.</param>
    /// <param name="isDecoder">Whether the model is a decoder (causal mode is meaningful).</param>
    /// <param name="file">The model.onnx it was loaded from (copied, with its external data, when saved), or null.</param>
    /// <param name="bytes">The graph exported in memory (written when saved), or null.</param>
    public OnnxBackbone(InferenceSession session, OnnxGraphSettings settings, string source, bool isDecoder, string? file, byte[]? bytes) : base(nameof(OnnxBackbone))
    {
        _file = file;
        _bytes = bytes;
        _session = session;
        _settings = settings;
        _source = source;
        _isDecoder = isDecoder;
        RegisterComponents();
    }

    public OnnxGraphSettings Settings => _settings;

    public InferenceSession Session => _session;

    public override int HiddenSize => _settings.HiddenSize;

    public override bool SupportsCausal => _isDecoder;

    public override Tensor Forward(Tensor inputIds, Tensor attentionMask, AttentionMode mode, Tensor? positionIds = null)
    {
        if (positionIds is not null)
            throw new UllmeException($"The ONNX graph '{_source}' computes positions from the attention mask; explicit position_ids need the Torch backend.");
        return Run(inputIds, attentionMask, null, mode, OnnxGraphExport.TokenEmbeddings);
    }

    public override Tensor? TryForwardPooled(Tensor inputIds, Tensor attentionMask, Tensor? poolingMask, AttentionMode mode, PoolingMode pooling, bool normalize)
    {
        if (pooling != _settings.Pooling || normalize != _settings.Normalize) return null;
        if (poolingMask is not null && !_settings.PoolingMaskInput) return null;
        return Run(inputIds, attentionMask, poolingMask, mode, OnnxGraphExport.SentenceEmbedding);
    }

    private Tensor Run(Tensor inputIds, Tensor attentionMask, Tensor? poolingMask, AttentionMode mode, string output)
    {
        if (mode != _settings.Attention)
            throw new UllmeException(
                $"The ONNX graph '{_source}' was exported with {OptionNames.Attention.ToName(_settings.Attention)} attention; " +
                $"this call asks for {OptionNames.Attention.ToName(mode)}. Export again with --attention {OptionNames.Attention.ToName(mode)} " +
                "(OnnxExportOptions.Attention) or use the Torch backend.");
        long b = inputIds.shape[0], t = inputIds.shape[1];
        long[] shape = [b, t];
        long[] ids = Longs(inputIds), mask = Longs(attentionMask);
        using var idsValue = OrtValue.CreateTensorValueFromMemory(ids, shape);
        using var maskValue = OrtValue.CreateTensorValueFromMemory(mask, shape);
        OrtValue? poolValue = null;
        try
        {
            var names = new List<string> { OnnxGraphExport.InputIds, OnnxGraphExport.AttentionMask };
            var values = new List<OrtValue> { idsValue, maskValue };
            if (_settings.PoolingMaskInput)
            {
                poolValue = OrtValue.CreateTensorValueFromMemory(poolingMask is null ? mask : Longs(poolingMask), shape);
                names.Add(OnnxGraphExport.PoolingMask);
                values.Add(poolValue);
            }
            using var runOptions = new RunOptions();
            using var results = _session.Run(runOptions, names, values, [output]);
            var result = results[0];
            long[] outShape = result.GetTensorTypeAndShape().Shape;
            return tensor(result.GetTensorDataAsSpan<float>().ToArray(), outShape);
        }
        finally
        {
            poolValue?.Dispose();
        }
    }

    /// <summary>Writes model.onnx (and model.onnx.data when the graph keeps its weights beside it).</summary>
    public override bool TryWriteModelFiles(string folder)
    {
        string target = Path.Combine(folder, OnnxBackendLocator.ModelFileName);
        if (_bytes is not null)
        {
            File.WriteAllBytes(target, _bytes);
        }
        else if (_file is not null)
        {
            if (!IO.PathGuard.Same(Path.GetDirectoryName(Path.GetFullPath(_file))!, folder))
            {
                File.Copy(_file, target, overwrite: true);
                if (File.Exists(_file + ".data")) File.Copy(_file + ".data", target + ".data", overwrite: true);
            }
        }
        return true;
    }

    private static long[] Longs(Tensor t)
    {
        using var c = t.to(ScalarType.Int64).cpu().contiguous();
        return c.data<long>().ToArray();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _session.Dispose();
        base.Dispose(disposing);
    }
}
