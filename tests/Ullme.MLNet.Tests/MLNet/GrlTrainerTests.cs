using System.Diagnostics;
using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.Training.Integration;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Lora;
using Ullme.MLNet.Transforms;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>GrlTrainer: an ML.NET estimator whose Fit fine-tunes a copy of the model through UllmeFineTuner.</summary>
[Collection(TorchCollection.Name)]
public sealed class GrlTrainerTests(ITestOutputHelper output) : SingleThreaded
{
    private readonly List<string> _folders = [];

    public override void Dispose()
    {
        foreach (var f in _folders) if (Directory.Exists(f)) Directory.Delete(f, recursive: true);
        base.Dispose();
    }

    private string Temp(string prefix)
    {
        var f = MLNetTestData.NewTempFolder(prefix);
        _folders.Add(f);
        return f;
    }

    private static readonly LoraOptions Adapter = new() { Rank = 4, Alpha = 8, Dropout = 0 };

    private static FineTuneOptions Quick(TrainingStrategy strategy = TrainingStrategy.Grl, int steps = 4, double lr = 1e-2) => new()
    {
        Strategy = strategy, Lora = Adapter, MaxLength = 48, BatchSize = 4, MaxSteps = steps, WarmupSteps = 0,
        Optimizer = new() { LearningRate = lr }, Shuffle = false,
    };

    private static float[][] Embed(UllmeModel model, IReadOnlyList<string> texts, UllmeEmbeddingTransformer like) =>
        new EmbeddingEngine(model).Embed(texts, new EmbeddingOptions
        {
            Pooling = like.EffectiveDefaults.Pooling, Attention = like.EffectiveDefaults.Attention,
            MaxLength = like.EffectiveDefaults.MaxLength, Normalize = true,
        });

    private static float[][] Transform(MLContext ml, ITransformer t, IReadOnlyList<string> texts)
    {
        var view = ml.Data.LoadFromEnumerable(texts.Select(x => new TextRow { Text = x }));
        return ml.Data.CreateEnumerable<FeaturesRow>(t.Transform(view), reuseRowObject: false).Select(r => r.Features).ToArray();
    }

    private static double ContrastiveLoss(UllmeModel model, IReadOnlyList<TrainingExample> batch) =>
        new UllmeFineTuner(model, new FineTuneOptions { Strategy = TrainingStrategy.Contrastive, Lora = null, MaxLength = 48 })
            .ComputeLosses(batch).Contrastive!.Value;

    // ------------------------------------------------------------------------------------------------------------
    // Fitting
    // ------------------------------------------------------------------------------------------------------------

    [AssetFact]
    public void Fit_tunes_a_copy_that_embeds_differently_with_a_lower_loss_and_leaves_the_base_alone()
    {
        var ml = new MLContext(seed: 1);
        using var baseModel = UllmeModel.Load(Assets.Stories260K);
        var rows = GrlTrainerTestData.Snli(16);
        var examples = GrlTrainer.ReadExamples(GrlTrainerTestData.View(ml, rows), new GrlTrainerOptions());
        var texts = rows.Take(4).Select(r => r.Query).ToList();
        var options = new GrlTrainerOptions { FineTune = Quick(steps: 8) with { Epochs = 2 }, InputColumnName = "Text" };
        var baseEmbeddings = new EmbeddingEngine(baseModel).Embed(texts);
        double baseLoss = ContrastiveLoss(baseModel, examples);

        var trainer = ml.Transforms.UllmeGrlTrainer(baseModel, options);
        var tuned = trainer.Fit(GrlTrainerTestData.View(ml, rows));

        double tunedLoss = ContrastiveLoss(tuned.Model, examples);
        output.WriteLine($"contrastive on the 16 training triplets: base {baseLoss:F4}, tuned {tunedLoss:F4}");
        Assert.True(tunedLoss < baseLoss - 0.05, $"loss {baseLoss} -> {tunedLoss}");
        Assert.Equal(8, trainer.LastTrainingResult!.StepsDone);
        // Adapters were merged: the tuned model has exactly the base model's parameter names.
        Assert.Equal(baseModel.Backbone.named_parameters().Select(p => p.name), tuned.Model.Backbone.named_parameters().Select(p => p.name));
        Assert.Empty(LoraInjector.FindLayers(tuned.Model.Backbone));

        var after = Transform(ml, tuned, texts);
        Assert.True(after.Zip(baseEmbeddings).Max(p => p.First.Zip(p.Second).Max(q => Math.Abs(q.First - q.Second))) > 1e-3);
        // The base model itself was not touched (Fit trains a copy).
        var baseAgain = new EmbeddingEngine(baseModel).Embed(texts);
        for (int i = 0; i < texts.Count; i++) Assert.Equal(baseEmbeddings[i], baseAgain[i]);
    }

    public sealed class TextRow { public string Text { get; set; } = ""; }

    [AssetFact]
    public void Mntp_then_SimCse_train_from_one_text_column_in_an_MLNet_pipeline()
    {
        var ml = new MLContext(seed: 1);
        using var baseModel = UllmeModel.Load(Assets.Stories260K);
        var texts = GrlTrainerTestData.Snli(16).Select(r => new TextRow { Text = r.Query }).ToList();
        var view = ml.Data.LoadFromEnumerable(texts);
        // The text is both the query and the positive; no negatives.
        GrlTrainerOptions Options(TrainingStrategy strategy) => new()
        {
            QueryColumnName = "Text", PositiveColumnName = "Text", NegativesColumnName = null, InputColumnName = "Text",
            FineTune = Quick(strategy, steps: 3, lr: 1e-3) with { Lora = null, EmbeddingAttention = AttentionMode.Bidirectional },
        };
        var mntp = ml.Transforms.UllmeGrlTrainer(baseModel, Options(TrainingStrategy.Mntp));
        var afterMntp = mntp.Fit(view);
        Assert.All(mntp.LastTrainingResult!.History, h => Assert.NotNull(h.Losses.MaskedNextToken));
        var simcse = ml.Transforms.UllmeGrlTrainer(afterMntp.Model, Options(TrainingStrategy.SimCse));
        var afterSimCse = simcse.Fit(view);
        Assert.All(simcse.LastTrainingResult!.History, h => Assert.NotNull(h.Losses.Contrastive));
        var probe = texts.Take(2).Select(t => t.Text).ToList();
        var e0 = new EmbeddingEngine(baseModel).Embed(probe, new EmbeddingOptions { Attention = AttentionMode.Bidirectional });
        var e2 = Transform(ml, afterSimCse, probe);
        Assert.True(e0.Zip(e2).Max(p => p.First.Zip(p.Second).Max(q => Math.Abs(q.First - q.Second))) > 1e-4, "the two stages changed nothing");
    }

    [AssetFact]
    public void Same_seed_gives_the_same_losses_and_every_fit_starts_from_the_base_weights()
    {
        var ml = new MLContext(seed: 1);
        var view = GrlTrainerTestData.View(ml, GrlTrainerTestData.Snli(12));
        var trainer = ml.Transforms.UllmeGrlTrainer(new GrlTrainerOptions
        {
            Model = Assets.Stories260K, FineTune = Quick(steps: 3) with { Lora = Adapter with { Dropout = 0.1 }, Shuffle = true, Seed = 3 },
        });
        var a = trainer.Fit(view);
        var lossesA = trainer.LastTrainingResult!.History.Select(h => h.Losses.Total).ToArray();
        var b = trainer.Fit(view);
        var lossesB = trainer.LastTrainingResult!.History.Select(h => h.Losses.Total).ToArray();
        Assert.Equal(lossesA, lossesB);
        var wa = a.Model.Backbone.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().data<float>().ToArray());
        foreach (var (name, p) in b.Model.Backbone.named_parameters()) Assert.Equal(wa[name], p.detach().data<float>().ToArray());

        var other = ml.Transforms.UllmeGrlTrainer(trainer.Options.Also(o => o.FineTune = o.FineTune with { Seed = 4 }));
        other.Fit(view);
        Assert.NotEqual(lossesA, other.LastTrainingResult!.History.Select(h => h.Losses.Total).ToArray());
    }

    [Fact]
    public void Default_model_trains_contrastively_with_rows_without_negatives()
    {
        var ml = new MLContext(seed: 1);
        var rows = GrlTrainerTestData.Paraphrases(12);
        Assert.Contains(rows, r => r.Negatives.Length == 0);
        var reports = new List<TrainingProgress>();
        var trainer = ml.Transforms.UllmeGrlTrainer(MLNetTestData.Default, new GrlTrainerOptions
        {
            FineTune = Quick(TrainingStrategy.Contrastive, steps: 3, lr: 1e-3) with { MaxLength = 32 },
            Progress = new SyncProgress(reports.Add),
        });
        var tuned = trainer.Fit(GrlTrainerTestData.View(ml, rows));
        Assert.Equal([1, 2, 3], reports.Select(r => r.Step));
        Assert.All(reports, r => Assert.True(r.Applied && r.Losses.Contrastive is > 0));
        Assert.Equal(MLNetTestData.Dim, tuned.EmbeddingDimension);
        // The tuned transformer embeds the Query column by default, so it composes over its own training data.
        var features = ml.Data.CreateEnumerable<QueryFeatures>(tuned.Transform(GrlTrainerTestData.View(ml, rows)), false).ToList();
        Assert.Equal(rows.Count, features.Count);
        var reference = new EmbeddingEngine(tuned.Model).Embed([rows[0].Query], new EmbeddingOptions { MaxLength = 32 })[0];
        MLNetTestData.AssertClose(reference, features[0].Features, 1e-5f);
    }

    [AssetFact]
    public void Progress_reaches_the_mlcontext_log_its_progress_channel_and_IProgress()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Message.Contains("GrlTrainer: step", StringComparison.Ordinal)) lock (log) log.Add(e.Message); };
        var reports = new List<TrainingProgress>();
        var fineTune = Quick(steps: 3, lr: 1e-3) with { WarmupSteps = 1, Decay = Ullme.MLNet.Training.Optimization.DecayKind.Linear };
        var trainer = ml.Transforms.UllmeGrlTrainer(new GrlTrainerOptions { Model = Assets.Stories260K, FineTune = fineTune, Progress = new SyncProgress(reports.Add) });
        trainer.Fit(GrlTrainerTestData.View(ml, GrlTrainerTestData.Snli(12)));

        Assert.Equal([1, 2, 3], reports.Select(r => r.Step));
        Assert.All(reports, r => Assert.Equal(["contrastive", "kl", "preference", "total"], r.Losses.ToDictionary().Keys.Order()));
        Assert.Equal([0, 1e-3, 5e-4], reports.Select(r => Math.Round(r.LearningRate, 12)));

        Assert.Equal(3, log.Count);
        Assert.Contains("GrlTrainer: step 2/3 epoch 0 loss ", log[1]);
        foreach (var term in new[] { "contrastive", "preference", "kl", "lr 0.001" }) Assert.Contains(term, log[1]);

        var events = MLNetInterop.TakeProgressEvents(ml);
        Assert.Equal(["Start", "Progress", "Progress", "Progress", "Stop"], events.Where(e => e.Calculation == nameof(GrlTrainer)).Select(e => e.Kind));
        var checkpoints = events.Where(e => e.Calculation == nameof(GrlTrainer) && e.Kind == "Progress").ToList();
        for (int i = 0; i < 3; i++)
        {
            var (_, _, metrics, units) = checkpoints[i];
            Assert.Equal(GrlTrainer.ProgressMetricNames.Count, metrics.Length);
            Assert.Equal(reports[i].Losses.Total, metrics[0]);
            Assert.Equal(reports[i].Losses.Contrastive, metrics[1]);
            Assert.Null(metrics[2]);                                    // no LM term in the GRL preset
            Assert.Equal(reports[i].Losses.Consistency, metrics[4]);
            Assert.Equal(reports[i].LearningRate, metrics[5]);
            Assert.Equal(i + 1, units[0]);
        }
    }

    [AssetFact]
    public void Cancellation_stops_training_through_the_token_or_the_mlcontext()
    {
        var ml = new MLContext(seed: 1);
        var view = GrlTrainerTestData.View(ml, GrlTrainerTestData.Snli(12));
        using var cts = new CancellationTokenSource();
        var steps = new List<int>();
        var options = new GrlTrainerOptions
        {
            Model = Assets.Stories260K, FineTune = Quick(steps: 10), CancellationToken = cts.Token,
            Progress = new SyncProgress(p => { steps.Add(p.Step); if (p.Step == 2) cts.Cancel(); }),
        };
        Assert.ThrowsAny<OperationCanceledException>(() => ml.Transforms.UllmeGrlTrainer(options).Fit(view));
        Assert.Equal([1, 2], steps);

        steps.Clear();
        options.CancellationToken = default;
        options.Progress = new SyncProgress(p => { steps.Add(p.Step); if (p.Step == 1) CancelExecution(ml); });
        Assert.ThrowsAny<OperationCanceledException>(() => ml.Transforms.UllmeGrlTrainer(options).Fit(view));
        Assert.Equal([1], steps);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Columns
    // ------------------------------------------------------------------------------------------------------------

    private sealed class CustomRow
    {
        public string Q { get; set; } = "";
        public string P { get; set; } = "";
        public string N { get; set; } = "";
        public string Task { get; set; } = "";
        public float Score { get; set; }
        [VectorType(2)] public float[] Numbers { get; set; } = [0, 0];
    }

    [Fact]
    public void Column_names_are_configurable_and_negatives_may_be_one_text_or_absent()
    {
        var ml = new MLContext();
        var view = ml.Data.LoadFromEnumerable(new[]
        {
            new CustomRow { Q = "q0", P = "p0", N = "n0", Task = "Retrieve passages" },
            new CustomRow { Q = "q1", P = "p1", N = "", Task = "" },
        });
        var examples = GrlTrainer.ReadExamples(view, new GrlTrainerOptions
        {
            QueryColumnName = "Q", PositiveColumnName = "P", NegativesColumnName = "N", InstructionColumnName = "Task",
        });
        Assert.Equal(("q0", "p0", "Retrieve passages"), (examples[0].Query, examples[0].Positive, examples[0].Instruction));
        Assert.Equal(["n0"], examples[0].Negatives);
        Assert.Empty(examples[1].Negatives);
        Assert.Null(examples[1].Instruction);

        var noNegatives = GrlTrainer.ReadExamples(view, new GrlTrainerOptions { QueryColumnName = "Q", PositiveColumnName = "P", NegativesColumnName = null });
        Assert.All(noNegatives, e => Assert.Empty(e.Negatives));

        // Vector negatives: empty vectors and empty items are allowed (items are skipped).
        var triplets = ml.Data.LoadFromEnumerable(new[]
        {
            new TripletRow { Query = "a", Positive = "b", Negatives = ["c", "", "d"] },
            new TripletRow { Query = "e", Positive = "f", Negatives = [] },
        });
        var read = GrlTrainer.ReadExamples(triplets, new GrlTrainerOptions());
        Assert.Equal(["c", "d"], read[0].Negatives);
        Assert.Empty(read[1].Negatives);
    }

    [Fact]
    public void Bad_columns_and_empty_texts_give_errors_naming_column_type_and_row()
    {
        var ml = new MLContext();
        var view = ml.Data.LoadFromEnumerable(new[] { new CustomRow { Q = "q", P = "p" }, new CustomRow { Q = "q", P = "p" }, new CustomRow { Q = " ", P = "p" } });
        UllmeException Fails(GrlTrainerOptions o) => Assert.Throws<UllmeException>(() => GrlTrainer.ReadExamples(view, o));

        var missing = Fails(new GrlTrainerOptions { QueryColumnName = "Q", PositiveColumnName = "P" });
        Assert.Contains("negatives column 'Negatives' not found", missing.Message);
        Assert.Contains("'Q' (String)", missing.Message);
        var number = Fails(new GrlTrainerOptions { QueryColumnName = "Score", PositiveColumnName = "P", NegativesColumnName = null });
        Assert.Contains("query column 'Score' must be of type String (text), found Single", number.Message);
        var vector = Fails(new GrlTrainerOptions { QueryColumnName = "Q", PositiveColumnName = "P", NegativesColumnName = "Numbers" });
        Assert.Contains("negatives column 'Numbers' must be a vector of String or a String, found Vector<Single, 2>", vector.Message);
        var empty = Fails(new GrlTrainerOptions { QueryColumnName = "Q", PositiveColumnName = "P", NegativesColumnName = null });
        Assert.Contains("row 2 has an empty query (column 'Q')", empty.Message);

        // The same checks on the schema shape, before any row is read or model loaded.
        var estimator = ml.Transforms.UllmeGrlTrainer(new GrlTrainerOptions { QueryColumnName = "Q", PositiveColumnName = "Score", NegativesColumnName = null });
        var shape = Assert.Throws<UllmeException>(() => estimator.GetOutputSchema(MLNetInterop.ShapeOf(view.Schema)));
        Assert.Contains("positive column 'Score' must be of type String (text), found Single", shape.Message);
        var ok = ml.Transforms.UllmeGrlTrainer(new GrlTrainerOptions { QueryColumnName = "Q", PositiveColumnName = "P", NegativesColumnName = "N" })
            .GetOutputSchema(MLNetInterop.ShapeOf(view.Schema));
        Assert.Contains(ok, c => c.Name == "Features" && c.ItemType == NumberDataViewType.Single);

        Assert.Contains("must differ", Assert.Throws<UllmeException>(() =>
            ml.Transforms.UllmeGrlTrainer(new GrlTrainerOptions { QueryColumnName = "Q", PositiveColumnName = "Q" })).Message);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Save / load and export
    // ------------------------------------------------------------------------------------------------------------

    [Fact]
    public void Tuned_transformer_round_trips_Model_Save_and_Load_also_in_a_fresh_process()
    {
        var ml = new MLContext(seed: 1);
        string dir = Temp("ullme-grl-zip-");
        var trainer = ml.Transforms.UllmeGrlTrainer(MLNetTestData.Default, new GrlTrainerOptions
        {
            FineTune = Quick(TrainingStrategy.Contrastive, steps: 2, lr: 1e-2) with { MaxLength = 32 }, InputColumnName = "Text",
        });
        var tuned = trainer.Fit(GrlTrainerTestData.View(ml, GrlTrainerTestData.Paraphrases(8)));
        var texts = MLNetTestData.Texts(5);
        var expected = Transform(ml, tuned, texts);
        var baseline = MLNetTestData.Reference(texts, new EmbeddingOptions { MaxLength = 32 });
        Assert.True(expected[0].Zip(baseline[0]).Max(p => Math.Abs(p.First - p.Second)) > 1e-4, "training changed nothing");

        string zip = Path.Combine(dir, "tuned.zip");
        ml.Model.Save(tuned, ml.Data.LoadFromEnumerable(new[] { new TextRow() }).Schema, zip);
        var loaded = ml.Model.Load(zip, out _);
        var again = Transform(ml, loaded, texts);
        for (int i = 0; i < texts.Count; i++) Assert.Equal(expected[i], again[i]);

        string samples = typeof(GrlTrainerTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "UllmeSamplesDll").Value!;
        string textsFile = Path.Combine(dir, "texts.txt"), outFile = Path.Combine(dir, "out.bin");
        File.WriteAllLines(textsFile, texts);
        using var process = Process.Start(new ProcessStartInfo("dotnet", ["exec", samples, "embed-zip", zip, textsFile, outFile]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string stdout = process.StandardOutput.ReadToEnd(), stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}\n{stdout}\n{stderr}");
        var bytes = File.ReadAllBytes(outFile);
        var floats = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, floats, 0, bytes.Length);
        Assert.Equal(texts.Count * MLNetTestData.Dim, floats.Length);
        for (int i = 0; i < texts.Count; i++)
            MLNetTestData.AssertClose(expected[i], floats.AsSpan(i * MLNetTestData.Dim, MLNetTestData.Dim).ToArray(), 1e-5f);
    }

    private static void AssertExportRoundTrips(UllmeEmbeddingTransformer tuned, string folder, string originalWeights, IReadOnlyList<string> texts, ModelDType dtype)
    {
        foreach (var file in new[] { "config.json", "model.safetensors", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json", "ullme.json" })
            Assert.True(File.Exists(Path.Combine(folder, file)), $"{file} missing from the export");
        // Merged weights under exactly the Hugging Face names of the original checkpoint, in the model's dtype.
        using (var exported = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors")))
        using (var original = SafeTensorsFile.Open(originalWeights))
        {
            Assert.DoesNotContain(exported.Tensors.Keys, k => k.Contains("lora", StringComparison.OrdinalIgnoreCase));
            var extra = exported.Tensors.Keys.Except(original.Tensors.Keys).ToList();
            // (Old checkpoints store rotary inverse frequencies, which HF and we recompute.)
            var lost = original.Tensors.Keys.Except(exported.Tensors.Keys).Where(k => !k.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal)).ToList();
            Assert.True(extra.Count == 0 && lost.Count == 0, $"exported keys differ from the original's: extra [{string.Join(", ", extra)}], missing [{string.Join(", ", lost)}]");
            var expectedDtype = dtype == ModelDType.BFloat16 ? ScalarType.BFloat16 : ScalarType.Float32;
            Assert.All(exported.Tensors.Values, t => Assert.Equal(expectedDtype, t.ScalarType));
        }
        using var reloaded = UllmeModel.Load(folder, new ModelLoadOptions { DType = dtype });
        Assert.Equal(tuned.EffectiveDefaults, reloaded.Defaults);
        var a = Embed(tuned.Model, texts, tuned);
        var b = new EmbeddingEngine(reloaded).Embed(texts);   // the folder's own defaults
        for (int i = 0; i < texts.Count; i++) Assert.Equal(a[i], b[i]);
    }

    [Fact]
    public void Tiny_random_llama_exports_a_folder_that_reloads_to_identical_embeddings()
    {
        var ml = new MLContext(seed: 1);
        string model = GrlTrainerTestData.TinyLlamaFolder();
        _folders.Add(model);
        string export = Path.Combine(Temp("ullme-grl-export-"), "tuned");
        var rows = GrlTrainerTestData.TinyTriplets(12);
        var trainer = ml.Transforms.UllmeGrlTrainer(new GrlTrainerOptions
        {
            Model = model, ExportFolder = export,
            FineTune = Quick(steps: 3) with { Weights = new LossWeights(1, 0.5, 1, 1), Pooling = Ullme.MLNet.Pooling.PoolingMode.LastToken, MaxLength = 24 },
        });
        var tuned = trainer.Fit(GrlTrainerTestData.View(ml, rows));
        Assert.All(trainer.LastTrainingResult!.History, h => Assert.True(h.Applied && h.Losses.LanguageModel is > 0));
        AssertExportRoundTrips(tuned, export, Path.Combine(model, "model.safetensors"), rows.Select(r => r.Positive).ToList(), ModelDType.Float32);
        Assert.Contains("\"pooling_mode_lasttoken\": true", File.ReadAllText(Path.Combine(export, "1_Pooling", "config.json")));
    }

    [AssetFact]
    public void Stories260K_bfloat16_lora_export_keeps_names_dtype_and_embeddings()
    {
        var ml = new MLContext(seed: 1);
        string export = Path.Combine(Temp("ullme-grl-bf16-"), "tuned");
        var rows = GrlTrainerTestData.Snli(8);
        var trainer = ml.Transforms.UllmeGrlTrainer(new GrlTrainerOptions
        {
            Model = Assets.Stories260K, DType = ModelDType.BFloat16, FineTune = Quick(steps: 2),
        });
        var tuned = trainer.Fit(GrlTrainerTestData.View(ml, rows));
        Assert.Equal(ScalarType.BFloat16, tuned.Model.ScalarType);
        tuned.SaveModelFolder(export);
        AssertExportRoundTrips(tuned, export, Path.Combine(Assets.Stories260K, "model.safetensors"), rows.Select(r => r.Query).ToList(), ModelDType.BFloat16);
        // The bfloat16 weights moved (adapters were trained in float32 and merged).
        using var original = UllmeModel.Load(Assets.Stories260K, new ModelLoadOptions { DType = ModelDType.BFloat16 });
        var q0 = original.Backbone.named_parameters().First(p => p.name == "model.layers.0.self_attn.q_proj.weight").parameter;
        var q1 = tuned.Model.Backbone.named_parameters().First(p => p.name == "model.layers.0.self_attn.q_proj.weight").parameter;
        Assert.True((q0 - q1).abs().max().to(ScalarType.Float32).item<float>() > 0);
    }

    /// <summary>MLContext.CancelExecution is internal to ML.NET (AutoML calls it); reached by reflection as in
    /// UllmeEmbeddingTransformerTests.</summary>
    private static void CancelExecution(MLContext ml) =>
        typeof(MLContext).GetMethod("CancelExecution", BindingFlags.Instance | BindingFlags.NonPublic)!.Invoke(ml, null);

    private sealed class SyncProgress(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }

    private sealed class QueryFeatures
    {
        public string Query { get; set; } = "";
        public float[] Features { get; set; } = [];
    }
}

internal static class OptionsExtensions
{
    /// <summary>Edits a copy.</summary>
    public static GrlTrainerOptions Also(this GrlTrainerOptions o, Action<GrlTrainerOptions> edit)
    {
        var c = o.Clone();
        edit(c);
        return c;
    }
}
