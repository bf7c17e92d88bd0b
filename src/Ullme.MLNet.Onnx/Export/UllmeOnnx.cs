using System.Text.Json;
using System.Text.Json.Nodes;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Onnx.Export;
using Ullme.MLNet.Onnx.Graph;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Onnx;

/// <summary>What <see cref="UllmeOnnx.Export"/> wrote.</summary>
/// <param name="Folder">The output folder.</param>
/// <param name="ModelFile">Its <c>model.onnx</c>.</param>
/// <param name="ExternalDataFile"><c>model.onnx.data</c> when the weights were written beside the graph, else null.</param>
/// <param name="WeightBytes">Bytes of weights in the graph (after quantization).</param>
/// <param name="Nodes">Graph nodes.</param>
/// <param name="LinearLayers">Linear layers (quantized ones with int8 / int4).</param>
/// <param name="Attention">Attention mode baked into the graph.</param>
/// <param name="Pooling">Pooling of <c>sentence_embedding</c>.</param>
/// <param name="Normalize">Whether <c>sentence_embedding</c> is L2-normalised.</param>
/// <param name="Quantize">Weight format of the linear layers.</param>
public sealed record OnnxExportResult(string Folder, string ModelFile, string? ExternalDataFile, long WeightBytes, int Nodes,
    int LinearLayers, AttentionMode Attention, PoolingMode Pooling, bool Normalize, OnnxQuantization Quantize);

/// <summary>
/// Exports a loaded model to an ONNX folder that ONNX Runtime (and ML.NET's <c>ApplyOnnxModel</c>) run and that
/// <see cref="UllmeModel.Load"/> loads on the ONNX Runtime backend: <c>model.onnx</c> (plus <c>model.onnx.data</c>
/// when the weights exceed <see cref="OnnxExportOptions.ExternalDataThreshold"/>), the tokenizer files,
/// <c>config.json</c>, the sentence-transformers settings files and <c>ullme.json</c>.
/// <para>The graph takes <c>input_ids</c>, <c>attention_mask</c> and (by default) <c>pooling_mask</c>, all
/// [batch, sequence] int64, and returns <c>sentence_embedding</c> [batch, hidden] and <c>token_embeddings</c>
/// [batch, sequence, hidden], float32.</para>
/// </summary>
public static class UllmeOnnx
{
    /// <summary>Exports <paramref name="model"/> (loaded on the Torch backend) into <paramref name="outputFolder"/>,
    /// written under a staging name and renamed into place when complete (a failed export leaves nothing behind and
    /// an older folder of that name untouched).</summary>
    /// <exception cref="UllmeException">An option is invalid, the model is not on the Torch backend, or the
    /// architecture cannot be exported (the message says which).</exception>
    public static OnnxExportResult Export(UllmeModel model, string outputFolder, OnnxExportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputFolder);
        options ??= new OnnxExportOptions();
        var settings = OnnxGraphExport.Resolve(model.Backbone, model.Defaults, options);
        string folder = Path.GetFullPath(outputFolder);
        if (IO.PathGuard.Same(folder, model.SourceFolder))
            throw new UllmeException($"The ONNX output folder '{outputFolder}' is the model's own folder; choose another one.");
        OnnxExportResult? result = null;
        IO.AtomicFolder.Write(folder, staging =>
        {
            string modelFile = Path.Combine(staging, OnnxBackendLocator.ModelFileName);
            using var g = new OnnxGraphBuilder(settings.Opset);
            bool external = OnnxGraphExport.EstimateBytes(model.Backbone) > options.ExternalDataThreshold;
            if (external) g.UseExternalData(modelFile + ".data");
            int linears = OnnxGraphExport.Emit(g, model.Backbone, model.Config, settings, options.Int4BlockSize);
            g.Save(modelFile, OnnxGraphExport.Metadata(settings, model.ModelId), OnnxGraphExport.ProducerVersion);
            g.Dispose();
            File.WriteAllText(Path.Combine(staging, "config.json"), model.Config.ToJson());
            model.CopyTokenizerFiles(staging);
            var defaults = new EmbeddingDefaults(settings.Pooling, settings.Attention, settings.Normalize, model.Defaults.MaxLength);
            UllmeModel.WriteSentenceTransformersFiles(staging, defaults);
            AddOnnxSection(Path.Combine(staging, "ullme.json"), settings);
            string final = Path.Combine(folder, OnnxBackendLocator.ModelFileName);
            result = new OnnxExportResult(folder, final, external ? final + ".data" : null, g.WeightBytes, g.NodeCount, linears,
                settings.Attention, settings.Pooling, settings.Normalize, settings.Quantize);
        });
        return result!;
    }

    /// <summary>ullme.json gains an "onnx" object: what the graph bakes in and its interface.</summary>
    private static void AddOnnxSection(string path, OnnxGraphSettings s)
    {
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        var inputs = new JsonArray(OnnxGraphExport.InputIds, OnnxGraphExport.AttentionMask);
        if (s.PoolingMaskInput) inputs.Add(OnnxGraphExport.PoolingMask);
        root["onnx"] = new JsonObject
        {
            ["file"] = OnnxBackendLocator.ModelFileName,
            ["opset"] = s.Opset,
            ["quantize"] = OnnxNames.Quantize.ToName(s.Quantize),
            ["inputs"] = inputs,
            ["outputs"] = new JsonArray(OnnxGraphExport.SentenceEmbedding, OnnxGraphExport.TokenEmbeddings),
        };
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
