using System.Diagnostics;
using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Losses;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Tests.MLNetIntegration;

public sealed class PairRow
{
    public string Query { get; set; } = "";
    public string Passage { get; set; } = "";
}

public sealed class RelevanceRow
{
    public float Relevance { get; set; }
    public float RelevanceRepresentation { get; set; }
}

/// <summary>mlContext.Transforms.UllmeScore: generation scores equal the engine's causal log-probs of the training
/// prompt layout, representation scores equal the embeddings' cosine, schema errors are clear, cursors are lazy and
/// batched, and the transform survives Model.Save/Load (also in a fresh process) and PredictionEngine.</summary>
[Collection(TorchCollection.Name)]
public sealed class UllmeScoreTransformerTests
{
    private static readonly PairRow[] Pairs =
    [
        new() { Query = "a cat on a mat", Passage = "the cat sat on the mat." },
        new() { Query = "a cat on a mat", Passage = "stocks fell sharply today!" },
        new() { Query = "where is the dog?", Passage = "the dog is in the garden, asleep." },
        new() { Query = "where is the dog?", Passage = "a" },
        new() { Query = "rain", Passage = "it rained all day long and the river rose over its banks by night." },
        new() { Query = "", Passage = "an empty query still has a prompt." },
        new() { Query = "numbers 123", Passage = "QP 42." },
    ];

    private static float[] Column(IDataView view, string name) => view.GetColumn<float>(name).ToArray();

    /// <summary>What the generation score must be: <c>ullme score</c>'s mean log-prob of the passage after the prompt
    /// FineTuneOptions builds (the engine's Score with prefix = prompt, continuation = passage).</summary>
    private static double[] EngineMeans(UllmeModel model, IEnumerable<PairRow> pairs, string? instruction = null, bool sum = false)
    {
        var prompt = new FineTuneOptions();
        var requests = pairs.Select(p => new ScoreRequest(prompt.BuildGenerationPrompt(p.Query, instruction), p.Passage)).ToArray();
        return new EmbeddingEngine(model).Score(requests, batchSize: 1).Select(r => sum ? r.Sum : r.Mean).ToArray();
    }

    [Fact]
    public void Generation_score_equals_the_engine_log_prob_of_the_training_prompt_on_a_tiny_random_llama()
    {
        var ml = new MLContext();
        var data = ml.Data.LoadFromEnumerable(Pairs);
        var options = new UllmeScoreOptions { BatchSize = 3, ReadAheadRows = 4, Instruction = "Find the passage" };
        var scored = ml.Transforms.UllmeScore(TinyScoringModel.Model, options).Fit(data).Transform(data);
        var actual = Column(scored, "Relevance");
        var expected = EngineMeans(TinyScoringModel.Model, Pairs, "Find the passage");
        for (int i = 0; i < Pairs.Length; i++) Assert.Equal(expected[i], actual[i], 1e-4);
        // A random model is not a constant: the scores differ between passages.
        Assert.True(actual.Distinct().Count() > 3);

        options.GenerationScore = GenerationScore.Sum;
        var sums = Column(ml.Transforms.UllmeScore(TinyScoringModel.Model, options).Fit(data).Transform(data), "Relevance");
        var expectedSums = EngineMeans(TinyScoringModel.Model, Pairs, "Find the passage", sum: true);
        for (int i = 0; i < Pairs.Length; i++) Assert.Equal(expectedSums[i], sums[i], 1e-3);
    }

    [Fact]
    public void Transform_uses_the_same_token_layout_as_fine_tuning()
    {
        // [BOS] + prompt tokens + passage tokens, scored from the first passage token; a cap cuts the passage's end.
        var tok = TinyScoringModel.Model.Tokenizer;
        var scorer = new RelevanceScorer(new EmbeddingEngine(TinyScoringModel.Model), new RelevanceOptions { MaxGenerationLength = 30 });
        var r = scorer.ToRequests([new QueryPassage("cat", "the cat sat on the mat.")])[0];
        int[] prompt = [.. tok.PrefixTokenIds, .. tok.Encode("Query: cat\nPassage: ", addSpecialTokens: false)];
        Assert.Equal(1, prompt[0]);
        Assert.Equal(prompt.Length, r.ScoreFrom);
        Assert.Equal(30, r.InputIds.Count);
        Assert.Equal([.. prompt, .. tok.Encode("the cat sat on the mat.", addSpecialTokens: false).Take(30 - prompt.Length)], r.InputIds);
        // A prompt longer than the cap loses its beginning after BOS and keeps one passage token.
        var cut = scorer.ToRequests([new QueryPassage("a much longer query than the cap allows", "xyz")])[0];
        Assert.Equal(30, cut.InputIds.Count);
        Assert.Equal(1, cut.InputIds[0]);
        Assert.Equal(29, cut.ScoreFrom);
        Assert.Equal(tok.Encode("x", addSpecialTokens: false)[0], cut.InputIds[29]);
    }

    [Fact]
    public void Representation_mode_is_the_cosine_of_engine_embeddings_and_both_mode_outputs_the_two_signals()
    {
        var ml = new MLContext();
        var data = ml.Data.LoadFromEnumerable(Pairs);
        var model = TinyScoringModel.Model;
        var rep = Column(ml.Transforms.UllmeScore(model, new UllmeScoreOptions { Mode = UllmeScoreMode.Representation, Instruction = "Find" }).Fit(data).Transform(data), "Relevance");
        var engine = new EmbeddingEngine(model);
        var q = engine.Embed(Pairs.Select(p => p.Query).ToArray(), new EmbeddingOptions { Instruction = "Find" });
        var d = engine.Embed(Pairs.Select(p => p.Passage).ToArray());
        for (int i = 0; i < Pairs.Length; i++)
        {
            double cos = q[i].Zip(d[i], (a, b) => (double)a * b).Sum(); // normalised embeddings: cosine = dot
            Assert.Equal(cos, rep[i], 1e-5);
        }

        var both = ml.Transforms.UllmeScore(model, new UllmeScoreOptions { Mode = UllmeScoreMode.Both, Instruction = "Find" }).Fit(data).Transform(data);
        Assert.Equal(NumberDataViewType.Single, both.Schema["Relevance"].Type);
        Assert.Equal(NumberDataViewType.Single, both.Schema["RelevanceRepresentation"].Type);
        Assert.Equal(rep, Column(both, "RelevanceRepresentation"));
        var gen = EngineMeans(model, Pairs, "Find");
        var bothGen = Column(both, "Relevance");
        for (int i = 0; i < Pairs.Length; i++) Assert.Equal(gen[i], bothGen[i], 1e-4);
    }

    [Fact]
    public void Schema_errors_name_the_column_and_encoders_refuse_generation_modes()
    {
        var ml = new MLContext();
        var data = ml.Data.LoadFromEnumerable(new[] { new TextRow { Text = "x" } });
        var e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeScore(TinyScoringModel.Model, new UllmeScoreOptions()).Fit(data));
        Assert.Contains("UllmeScore: input column 'Query' not found", e.Message);
        Assert.Contains("'Text'", e.Message);

        var typed = ml.Data.LoadFromEnumerable(new[] { new { Query = "q", Passage = 1f } });
        e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeScore(TinyScoringModel.Model, new UllmeScoreOptions()).Fit(typed));
        Assert.Contains("'Passage' must be of type String", e.Message);

        e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeScore(new UllmeScoreOptions { Model = "/no/such/folder" }));
        Assert.Contains("UllmeScoreOptions.Model", e.Message);
        e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeScore(TinyScoringModel.Model, new UllmeScoreOptions { GenerationPrompt = "Passage: " }));
        Assert.Contains("{query}", e.Message);
        e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeScore(TinyScoringModel.Model, new UllmeScoreOptions { Mode = UllmeScoreMode.Both, RepresentationColumnName = "Relevance" }));
        Assert.Contains("RepresentationColumnName", e.Message);

        // all-MiniLM-L6-v2 is an encoder: generation needs a decoder; representation works.
        var pairs = ml.Data.LoadFromEnumerable(Pairs.Take(2));
        e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeScore(MLNetTestData.Default, new UllmeScoreOptions { Mode = UllmeScoreMode.Both }).Fit(pairs));
        Assert.Contains("encoder without a language-model head", e.Message);
        Assert.Contains("Representation", e.Message);
        var rep = Column(ml.Transforms.UllmeScore(MLNetTestData.Default, new UllmeScoreOptions { Mode = UllmeScoreMode.Representation }).Fit(pairs).Transform(pairs), "Relevance");
        Assert.True(rep[0] > rep[1], $"MiniLM: cat/mat should beat stocks ({rep[0]} vs {rep[1]})");
    }

    [Fact]
    public void Cursor_is_lazy_reads_ahead_in_windows_and_passes_columns_through()
    {
        var ml = new MLContext();
        var rows = Enumerable.Range(0, 7).Select(i => Pairs[i % Pairs.Length]).ToArray();
        var data = ml.Data.LoadFromEnumerable(rows);
        var transformer = ml.Transforms.UllmeScore(TinyScoringModel.Model, new UllmeScoreOptions { ReadAheadRows = 3, BatchSize = 2 }).Fit(data);
        var view = transformer.Transform(data);
        Assert.Equal(0, transformer.RowsScored);
        // Only input columns asked for: nothing is scored.
        Assert.Equal(rows.Select(r => r.Query), view.GetColumn<string>("Query"));
        Assert.Equal(0, transformer.RowsScored);

        using var cursor = view.GetRowCursor([view.Schema["Relevance"], view.Schema["Passage"]]);
        var get = cursor.GetGetter<float>(view.Schema["Relevance"]);
        var passage = cursor.GetGetter<ReadOnlyMemory<char>>(view.Schema["Passage"]);
        Assert.True(cursor.MoveNext());
        Assert.Equal(3, transformer.RowsScored); // one window
        var expected = EngineMeans(TinyScoringModel.Model, rows);
        int n = 0;
        do
        {
            float v = 0;
            get(ref v);
            ReadOnlyMemory<char> p = default;
            passage(ref p);
            Assert.Equal(rows[n].Passage, p.ToString());
            Assert.Equal(expected[n], v, 1e-4);
            n++;
        } while (cursor.MoveNext());
        Assert.Equal(7, n);
        Assert.Equal(7, transformer.RowsScored);
    }

    [Fact]
    public void PredictionEngine_scores_one_row_like_the_batch_transform()
    {
        var ml = new MLContext();
        var data = ml.Data.LoadFromEnumerable(Pairs);
        var transformer = ml.Transforms.UllmeScore(TinyScoringModel.Model, new UllmeScoreOptions { Mode = UllmeScoreMode.Both }).Fit(data);
        var batch = transformer.Transform(data);
        var gen = Column(batch, "Relevance");
        var rep = Column(batch, "RelevanceRepresentation");
        using var engine = ml.Model.CreatePredictionEngine<PairRow, RelevanceRow>(transformer);
        for (int i = 0; i < Pairs.Length; i++)
        {
            var p = engine.Predict(Pairs[i]);
            Assert.Equal(gen[i], p.Relevance, 1e-5);
            Assert.Equal(rep[i], p.RelevanceRepresentation, 1e-5);
        }
    }

    private static (string Zip, float[] Gen, float[] Rep) SaveBoth(MLContext ml, string dir)
    {
        string folder = Path.Combine(dir, "tiny");
        TinyScoringModel.Model.SaveFolder(folder);
        var data = ml.Data.LoadFromEnumerable(Pairs);
        var options = new UllmeScoreOptions { Model = folder, Mode = UllmeScoreMode.Both, Instruction = "Find", BatchSize = 2, OutputColumnName = "Relevance" };
        var transformer = ml.Transforms.UllmeScore(options).Fit(data);
        var view = transformer.Transform(data);
        string zip = Path.Combine(dir, "score.zip");
        ml.Model.Save(transformer, data.Schema, zip);
        Directory.Delete(folder, recursive: true);
        return (zip, Column(view, "Relevance"), Column(view, "RelevanceRepresentation"));
    }

    [Fact]
    public void Saved_zip_loads_with_options_and_identical_scores()
    {
        string dir = MLNetTestData.NewTempFolder("ullme-score-save-");
        try
        {
            var ml = new MLContext();
            var (zip, gen, rep) = SaveBoth(ml, dir);
            var loaded = ml.Model.Load(zip, out var schema);
            var restored = Assert.IsType<UllmeScoreTransformer>(loaded as UllmeScoreTransformer ?? ((TransformerChain<ITransformer>)loaded).Single());
            Assert.Equal(UllmeScoreMode.Both, restored.Options.Mode);
            Assert.Equal("Find", restored.Options.Instruction);
            Assert.Equal("tiny", restored.ModelId);
            var view = loaded.Transform(ml.Data.LoadFromEnumerable(Pairs));
            Assert.Equal(gen, Column(view, "Relevance"));
            Assert.Equal(rep, Column(view, "RelevanceRepresentation"));
            // An embedding zip entry and a score entry are told apart by their signatures.
            using var archive = System.IO.Compression.ZipFile.OpenRead(zip);
            Assert.Contains(archive.Entries, e => e.FullName.EndsWith(MLNetInterop.ManifestEntry) && new StreamReader(e.Open()).ReadToEnd().Contains("\"score_options\""));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Zip_loads_and_scores_in_a_brand_new_process()
    {
        string samples = typeof(UllmeScoreTransformerTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "UllmeSamplesDll").Value!;
        string dir = MLNetTestData.NewTempFolder("ullme-score-fresh-");
        try
        {
            var ml = new MLContext();
            var (zip, gen, rep) = SaveBoth(ml, dir);
            string pairsFile = Path.Combine(dir, "pairs.tsv"), outFile = Path.Combine(dir, "out.tsv");
            File.WriteAllLines(pairsFile, Pairs.Select(p => p.Query.Replace("\n", " ") + "\t" + p.Passage));
            var psi = new ProcessStartInfo("dotnet", ["exec", samples, "score-zip", zip, pairsFile, outFile]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(psi)!;
            string stdout = process.StandardOutput.ReadToEnd(), stderr = process.StandardError.ReadToEnd();
            process.WaitForExit();
            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}\n{stdout}\n{stderr}");
            var lines = File.ReadAllLines(outFile);
            Assert.Equal(Pairs.Length, lines.Length);
            for (int i = 0; i < lines.Length; i++)
            {
                var f = lines[i].Split('\t').Select(s => float.Parse(s, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
                Assert.Equal(gen[i], f[0], 1e-5);
                Assert.Equal(rep[i], f[1], 1e-5);
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [AssetFact]
    public void Stories260K_generation_score_equals_ullme_score_mean_log_prob()
    {
        using var model = UllmeModel.Load(Assets.Stories260K);
        var pairs = new[]
        {
            new PairRow { Query = "Lily went to the park.", Passage = "She played with a big red ball." },
            new PairRow { Query = "Lily went to the park.", Passage = "The stock market closed higher." },
            new PairRow { Query = "Tom had a dog.", Passage = "The dog liked to run and jump in the sun all day long." },
        };
        var ml = new MLContext();
        var data = ml.Data.LoadFromEnumerable(pairs);
        var actual = Column(ml.Transforms.UllmeScore(model, new UllmeScoreOptions { BatchSize = 2 }).Fit(data).Transform(data), "Relevance");

        // `ullme score` on {"prefix": prompt, "continuation": passage}.
        string dir = MLNetTestData.NewTempFolder("ullme-score-cli-");
        try
        {
            var prompt = new FineTuneOptions();
            File.WriteAllLines(Path.Combine(dir, "in.jsonl"), pairs.Select(p => System.Text.Json.JsonSerializer.Serialize(new { prefix = prompt.BuildGenerationPrompt(p.Query, null), continuation = p.Passage })));
            int code = Ullme.Cli.UllmeCli.Run(["score", "--model", Assets.Stories260K, "--input", Path.Combine(dir, "in.jsonl"), "--output", Path.Combine(dir, "out.jsonl")]);
            Assert.Equal(0, code);
            var means = File.ReadAllLines(Path.Combine(dir, "out.jsonl")).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("mean").GetDouble()).ToArray();
            for (int i = 0; i < pairs.Length; i++) Assert.Equal(means[i], actual[i], 1e-4);
            Assert.True(actual[0] > actual[1], "a children's-story continuation should be likelier than a finance sentence");
        }
        finally { Directory.Delete(dir, true); }
    }
}
