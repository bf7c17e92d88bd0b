using System.IO.Compression;
using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Inference;
using Ullme.MLNet.IO;
using Ullme.MLNet.Onnx;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.MLNetIntegration;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Tests.Onnx;

/// <summary>
/// The ONNX backend in ML.NET: <c>UllmeEmbed</c> with <see cref="UllmeEmbeddingOptions.Backend"/> = OnnxRuntime embeds
/// like the Torch pipeline, its saved zip carries model.onnx (no safetensors) and loads back to identical vectors; and
/// the exported file runs in ML.NET's own <c>ApplyOnnxModel</c>.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class OnnxMLNetTests : IDisposable
{
    private readonly TemporaryFolder _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private static float[][] Predict(MLContext ml, ITransformer model, IEnumerable<string> texts)
    {
        using var engine = ml.Model.CreatePredictionEngine<TextRow, FeaturesRow>(model);
        return texts.Select(t => engine.Predict(new TextRow { Text = t }).Features).ToArray();
    }

    [Fact]
    public void UllmeEmbedOnOnnxRuntimeMatchesTorchAndItsZipCarriesTheOnnxModel()
    {
        var ml = new MLContext();
        var data = ml.Data.LoadFromEnumerable(new[] { new TextRow() });
        var texts = MLNetTestData.Texts(6);
        var torch = ml.Transforms.UllmeEmbed(new UllmeEmbeddingOptions { Model = "default" }).Fit(data);
        var onnx = ml.Transforms.UllmeEmbed(new UllmeEmbeddingOptions { Model = "default", Backend = InferenceBackend.OnnxRuntime }).Fit(data);
        var expected = Predict(ml, torch, texts);
        var actual = Predict(ml, onnx, texts);
        for (int i = 0; i < texts.Count; i++) MLNetTestData.AssertClose(expected[i], actual[i]);

        string zip = Path.Combine(_tmp.Path, "onnx.zip");
        ml.Model.Save(onnx, data.Schema, zip);
        using (var archive = ZipFile.OpenRead(zip))
        {
            var names = archive.Entries.Select(e => e.FullName.Replace('\\', '/')).ToList();
            Assert.Contains(names, n => n.EndsWith("Files/model.onnx", StringComparison.Ordinal));
            Assert.DoesNotContain(names, n => n.EndsWith(".safetensors", StringComparison.Ordinal));
        }
        var loaded = ml.Model.Load(zip, out _);
        var restored = (UllmeEmbeddingTransformer)(loaded as UllmeEmbeddingTransformer ?? ((TransformerChain<ITransformer>)loaded).Single());
        Assert.Equal(InferenceBackend.OnnxRuntime, restored.Options.Backend);
        var again = Predict(ml, loaded, texts);
        for (int i = 0; i < texts.Count; i++) Assert.Equal(actual[i], again[i]);
    }

    private const int Length = 12;

    private sealed class TokenRow
    {
        [VectorType(1, Length)] public long[] input_ids { get; set; } = [];
        [VectorType(1, Length)] public long[] attention_mask { get; set; } = [];
    }

    private sealed class SentenceRow
    {
        [VectorType(1, 384)] public float[] sentence_embedding { get; set; } = [];
    }

    [Fact]
    public void TheExportedFileRunsInMLNetsApplyOnnxModel()
    {
        using var model = UllmeModel.Load("default");
        string dir = Path.Combine(_tmp.Path, "export");
        UllmeOnnx.Export(model, dir, new OnnxExportOptions { PoolingMaskInput = false });
        var engine = new EmbeddingEngine(model);
        string[] texts = ["A man is playing a guitar.", "hi there", "Two dogs run across a snowy field near the lake"];
        var rows = new List<TokenRow>();
        var ids = new List<IReadOnlyList<int>>();
        foreach (string text in texts)
        {
            var encoded = engine.Encode(text);
            ids.Add(encoded.Ids);
            var row = new TokenRow { input_ids = new long[Length], attention_mask = new long[Length] };
            for (int j = 0; j < encoded.Ids.Length; j++)
            {
                row.input_ids[j] = encoded.Ids[j];
                row.attention_mask[j] = 1;
            }
            rows.Add(row);
        }
        var expected = engine.EmbedTokenIds(ids).Embeddings;

        var ml = new MLContext();
        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.ApplyOnnxModel(
            outputColumnNames: ["sentence_embedding"], inputColumnNames: ["input_ids", "attention_mask"],
            modelFile: Path.Combine(dir, "model.onnx"),
            shapeDictionary: new Dictionary<string, int[]> { ["input_ids"] = [1, Length], ["attention_mask"] = [1, Length] },
            gpuDeviceId: null, fallbackToCpu: false, recursionLimit: 100);
        var transformed = pipeline.Fit(data).Transform(data);
        var actual = ml.Data.CreateEnumerable<SentenceRow>(transformed, reuseRowObject: false).Select(r => r.sentence_embedding).ToList();
        Assert.Equal(texts.Length, actual.Count);
        for (int i = 0; i < texts.Length; i++) MLNetTestData.AssertClose(expected[i], actual[i]);
    }
}
