using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>
/// What a user saved before the package split (commit d697406, one Ullme.MLNet assembly) still loads and gives the same
/// outputs: ML.NET zips of UllmeEmbed (model folder, and an in-memory model inside an ML.NET pipeline), UllmeScore and a
/// GrlTrainer-tuned model, plus model folders written by UllmeModel.SaveFolder, by GrlTrainer's export and by `ullme train`. The zips,
/// folders and outputs under Fixtures/Compat were written by the old code on tiny random Llamas (the decoder fixture)
/// and are loaded here in a fresh MLContext with the current code. See Fixtures/Compat/README.md.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class CompatibilityTests
{
    /// <summary>Cosine an output must reach against the one recorded before the split.</summary>
    private const double MinCosine = 0.99999;

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "Compat", name);

    private static JsonElement Expected(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixture(name)));
        return doc.RootElement.Clone();
    }

    private static string[] Strings(JsonElement e) => e.EnumerateArray().Select(x => x.GetString()!).ToArray();

    private static float[] Floats(JsonElement e) => e.EnumerateArray().Select(x => x.GetSingle()).ToArray();

    private static float[][] Vectors(JsonElement e) => e.EnumerateArray().Select(Floats).ToArray();

    /// <summary>Same length, cosine >= <see cref="MinCosine"/> and the same norm (within 1e-4 relative), so that an
    /// unnormalised output that is merely parallel fails too.</summary>
    private static void AssertSameVectors(float[][] expected, float[][] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(expected[i].Length == actual[i].Length, $"{what} row {i}: dimension {actual[i].Length}, recorded {expected[i].Length}");
            double dot = 0, ee = 0, aa = 0;
            for (int j = 0; j < expected[i].Length; j++)
            {
                dot += (double)expected[i][j] * actual[i][j];
                ee += (double)expected[i][j] * expected[i][j];
                aa += (double)actual[i][j] * actual[i][j];
            }
            double cosine = dot / Math.Sqrt(ee * aa);
            Assert.True(cosine >= MinCosine, $"{what} row {i}: cosine {cosine:R} with the output recorded before the split");
            double en = Math.Sqrt(ee), an = Math.Sqrt(aa);
            Assert.True(Math.Abs(en - an) <= 1e-4 * en, $"{what} row {i}: norm {an:R}, recorded {en:R}");
        }
    }

    private static float[][] Transform(MLContext ml, ITransformer model, IEnumerable<string> texts, string column)
    {
        var view = model.Transform(ml.Data.LoadFromEnumerable(texts.Select(t => new TextRow { Text = t })));
        return view.GetColumn<float[]>(column).ToArray();
    }

    [Theory]
    [InlineData("embed")]      // UllmeEmbed(options with a model folder): last-token pooling, causal, instruction, MaxLength 40
    [InlineData("pipeline")]   // CopyColumns, then UllmeEmbed(in-memory model): mean pooling, bidirectional, not normalised
    [InlineData("grl")]        // GrlTrainer (GRL + LoRA, 3 steps) fitted and saved
    public void Embedding_zip_saved_before_the_split_loads_in_a_fresh_context_with_the_same_vectors(string name)
    {
        var expected = Expected(name + ".json");
        var texts = Strings(expected.GetProperty("texts"));
        var ml = new MLContext();
        var model = ml.Model.Load(Fixture(name + ".zip"), out var inputSchema);
        Assert.NotNull(inputSchema.GetColumnOrNull("Text"));
        var actual = Transform(ml, model, texts, expected.GetProperty("column").GetString()!);
        AssertSameVectors(Vectors(expected.GetProperty("vectors")), actual, name + ".zip");
    }

    [Fact]
    public void Score_zip_saved_before_the_split_loads_with_the_same_generation_and_representation_scores()
    {
        var expected = Expected("score.json");
        var queries = Strings(expected.GetProperty("queries"));
        var passages = Strings(expected.GetProperty("passages"));
        var ml = new MLContext();
        var model = ml.Model.Load(Fixture("score.zip"), out _);
        var view = model.Transform(ml.Data.LoadFromEnumerable(queries.Zip(passages, (q, p) => new CompatPairRow { Query = q, Passage = p })));
        var relevance = view.GetColumn<float>("Relevance").ToArray();
        var representation = view.GetColumn<float>("RelevanceRepresentation").ToArray();
        var expectedRelevance = Floats(expected.GetProperty("relevance"));
        var expectedRepresentation = Floats(expected.GetProperty("representation"));
        Assert.Equal(expectedRelevance.Length, relevance.Length);
        for (int i = 0; i < relevance.Length; i++)
        {
            Assert.True(Math.Abs(expectedRelevance[i] - relevance[i]) <= 1e-5 * Math.Max(1, Math.Abs(expectedRelevance[i])),
                $"row {i}: generation score {relevance[i]:R}, recorded {expectedRelevance[i]:R}");
            Assert.True(Math.Abs(expectedRepresentation[i] - representation[i]) <= 1e-5,
                $"row {i}: representation score {representation[i]:R}, recorded {expectedRepresentation[i]:R}");
        }
    }

    [Theory]
    [InlineData("saved-folder")]   // UllmeModel.SaveFolder with EmbeddingDefaults (mean, bidirectional, MaxLength 32)
    [InlineData("grl-export")]     // GrlTrainerOptions.ExportFolder: merged weights, sentence-transformers files, ullme.json
    [InlineData("train-output")]   // `ullme train --strategy grl` output folder; vectors recorded with the old `ullme embed`
    public void Model_folder_saved_before_the_split_loads_with_its_defaults_and_the_same_vectors(string name)
    {
        var expected = Expected(name + ".json");
        var texts = Strings(expected.GetProperty("texts"));
        using var model = UllmeModel.Load(Fixture(name));
        var actual = new EmbeddingEngine(model).Embed(texts);
        AssertSameVectors(Vectors(expected.GetProperty("vectors")), actual, name);
    }

    private sealed class CompatPairRow
    {
        public string Query { get; set; } = "";
        public string Passage { get; set; } = "";
    }
}
