using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Transforms;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>Options are validated before anything is loaded, and schema errors name the column and the type found.
/// None of these tests load a model.</summary>
public sealed class UllmeEmbeddingOptionsTests
{
    private sealed class TextRow { public string Text { get; set; } = ""; }
    private sealed class FloatRow { public float Text { get; set; } }
    private sealed class TextVectorRow { [VectorType(2)] public string[] Text { get; set; } = ["a", "b"]; }

    [Fact]
    public void Catalog_call_compiles_as_documented_and_describes_the_output_shape()
    {
        var ml = new MLContext();
        var estimator = ml.Transforms.UllmeEmbed(outputColumnName: "Features", inputColumnName: "Text", model: "default");
        var shape = estimator.GetOutputSchema(MLNetInterop.ShapeOf(ml.Data.LoadFromEnumerable(new[] { new TextRow() }).Schema));
        var features = shape.Single(c => c.Name == "Features");
        Assert.Equal(SchemaShape.Column.VectorKind.Vector, features.Kind);
        Assert.Equal(NumberDataViewType.Single, features.ItemType);
        Assert.Contains(shape, c => c.Name == "Text");
    }

    [Theory]
    [InlineData("BatchSize")]
    [InlineData("MaxLength")]
    [InlineData("ReadAheadRows")]
    [InlineData("Device")]
    [InlineData("InputColumnName")]
    [InlineData("OutputColumnName")]
    [InlineData("Pooling")]
    [InlineData("Model")]
    public void Invalid_option_is_rejected_up_front_naming_the_option(string option)
    {
        var o = new UllmeEmbeddingOptions();
        switch (option)
        {
            case "BatchSize": o.BatchSize = 0; break;
            case "MaxLength": o.MaxLength = 1; break;
            case "ReadAheadRows": o.ReadAheadRows = 0; break;
            case "Device": o.Device = "tpu"; break;
            case "InputColumnName": o.InputColumnName = " "; break;
            case "OutputColumnName": o.OutputColumnName = ""; break;
            case "Pooling": o.Pooling = (PoolingMode)42; break;
            case "Model": o.Model = "/nonexistent/model/folder"; break;
        }
        var ml = new MLContext();
        var e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeEmbed(o));
        Assert.Contains("UllmeEmbeddingOptions." + option, e.Message);
    }

    [Fact]
    public void Catalog_parameters_are_validated_too()
    {
        var ml = new MLContext();
        var e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeEmbed(model: "default", batchSize: -3));
        Assert.Contains("BatchSize", e.Message);
        Assert.Contains("-3", e.Message);
        string notAModel = Directory.CreateTempSubdirectory("ullme-nomodel-").FullName;
        try
        {
            e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeEmbed(model: notAModel));
            Assert.Contains("config.json", e.Message);
            Assert.Contains(notAModel, e.Message);
        }
        finally { Directory.Delete(notAModel, true); }
    }

    [Fact]
    public void Options_are_copied_so_later_edits_do_not_change_the_estimator()
    {
        var o = new UllmeEmbeddingOptions { BatchSize = 8, Instruction = "Represent the intent: " };
        var estimator = new MLContext().Transforms.UllmeEmbed(o);
        o.BatchSize = 1;
        o.Instruction = null;
        Assert.Equal(8, estimator.Options.BatchSize);
        Assert.Equal("Represent the intent: ", estimator.Options.Instruction);
    }

    [Fact]
    public void Missing_input_column_is_named_with_the_columns_available()
    {
        var ml = new MLContext();
        var estimator = ml.Transforms.UllmeEmbed(inputColumnName: "Sentence");
        var shape = MLNetInterop.ShapeOf(ml.Data.LoadFromEnumerable(new[] { new TextRow() }).Schema);
        var e = Assert.Throws<UllmeException>(() => estimator.GetOutputSchema(shape));
        Assert.Contains("'Sentence' not found", e.Message);
        Assert.Contains("'Text'", e.Message);
    }

    [Fact]
    public void Non_text_input_column_is_named_with_the_type_found()
    {
        var ml = new MLContext();
        var estimator = ml.Transforms.UllmeEmbed();
        var e = Assert.Throws<UllmeException>(() =>
            estimator.GetOutputSchema(MLNetInterop.ShapeOf(ml.Data.LoadFromEnumerable(new[] { new FloatRow() }).Schema)));
        Assert.Contains("'Text'", e.Message);
        Assert.Contains("Single", e.Message);

        e = Assert.Throws<UllmeException>(() =>
            estimator.GetOutputSchema(MLNetInterop.ShapeOf(ml.Data.LoadFromEnumerable(new[] { new TextVectorRow() }).Schema)));
        Assert.Contains("Vector", e.Message);

        // Fit checks the schema the same way, before loading any model.
        e = Assert.Throws<UllmeException>(() => { estimator.Fit(ml.Data.LoadFromEnumerable(new[] { new FloatRow() })); });
        Assert.Contains("found Single", e.Message);
    }

    [Theory]
    [InlineData(null, null, false, true, "cpu")]
    [InlineData("cuda:1", 0, false, false, "cuda:1")]
    [InlineData(null, 2, false, true, "cuda:2")]
    [InlineData(null, 0, true, false, "cpu")]
    public void Device_follows_the_option_then_the_MLContext_gpu_settings(string? option, int? gpu, bool fallback, bool cuda, string expected)
    {
        var warnings = new List<string>();
        Assert.Equal(expected, DeviceSpec.Resolve(option, gpu, fallback, () => cuda, warnings.Add));
        Assert.Equal(gpu is not null && option is null && !cuda ? 1 : 0, warnings.Count);
    }

    [Fact]
    public void Gpu_requested_without_cuda_and_without_fallback_fails_naming_the_setting()
    {
        var e = Assert.Throws<UllmeException>(() => DeviceSpec.Resolve(null, 0, fallbackToCpu: false, () => false, _ => { }));
        Assert.Contains("GpuDeviceId", e.Message);
        Assert.Contains("FallbackToCpu", e.Message);
    }

    [Fact]
    public void Embedding_options_map_onto_the_engine_options()
    {
        var o = new UllmeEmbeddingOptions
        {
            Pooling = PoolingMode.LastToken, Attention = AttentionMode.Causal, Instruction = "q: ",
            MaxLength = 64, BatchSize = 5, Normalize = false, DType = ModelDType.BFloat16,
        };
        var e = o.ToEmbeddingOptions();
        Assert.Equal(PoolingMode.LastToken, e.Pooling);
        Assert.Equal(AttentionMode.Causal, e.Attention);
        Assert.Equal("q: ", e.Instruction);
        Assert.Equal(64, e.MaxLength);
        Assert.Equal(5, e.BatchSize);
        Assert.False(e.Normalize);
        Assert.Equal(40, o.EffectiveReadAhead);
    }
}
