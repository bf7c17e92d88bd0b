using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Samples;

/// <summary>Model.Save / Model.Load of a pipeline containing UllmeEmbed, and loading in a brand-new process.</summary>
public static class SaveLoadSample
{
    public sealed class TextRow
    {
        public string Text { get; set; } = "";
    }

    public sealed class EmbeddingRow
    {
        [ColumnName("Features")] public float[] Features { get; set; } = [];
    }

    public static int Run(string zip)
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new TextRow { Text = "How do I activate my card?" } });
        var model = ml.Transforms.UllmeEmbed(outputColumnName: "Features", inputColumnName: "Text", model: "default").Fit(data);

        // The zip carries config, tokenizer files, safetensors weights and options: no model folder is needed to load it.
        ml.Model.Save(model, data.Schema, zip);
        Console.WriteLine($"saved {zip} ({new FileInfo(zip).Length / 1e6:F1} MB)");

        var loaded = ml.Model.Load(zip, out var schema);
        using var engine = ml.Model.CreatePredictionEngine<TextRow, EmbeddingRow>(loaded, schema);
        var e = engine.Predict(new TextRow { Text = "How do I activate my card?" }).Features;
        Console.WriteLine($"loaded; embedding has {e.Length} dimensions, first values {string.Join(", ", e.Take(4).Select(x => x.ToString("F4")))}");
        return 0;
    }

    /// <summary>
    /// Loads <paramref name="zip"/> with plain <c>mlContext.Model.Load</c> (no registration call: ML.NET finds our
    /// loader through the assembly name recorded in the zip), embeds each line of <paramref name="textsFile"/> and
    /// writes the vectors as little-endian float32 rows to <paramref name="outFile"/>.
    /// </summary>
    public static int EmbedFromZip(string zip, string textsFile, string outFile)
    {
        var ml = new MLContext();
        var model = ml.Model.Load(zip, out var schema);
        var texts = File.ReadAllLines(textsFile).Select(t => new TextRow { Text = t }).ToList();
        var output = model.Transform(ml.Data.LoadFromEnumerable(texts, schema));
        using var writer = new BinaryWriter(File.Create(outFile));
        foreach (var row in ml.Data.CreateEnumerable<EmbeddingRow>(output, reuseRowObject: false))
            foreach (float x in row.Features) writer.Write(x);
        Console.WriteLine($"embedded {texts.Count} texts");
        return 0;
    }
}
