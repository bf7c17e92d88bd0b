using System.Diagnostics;
using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tokenization;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Lora;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// Training throughput of <see cref="UllmeFineTuner"/> on the Qwen2-0.5B shape with LoRA (r 16 on every linear
/// layer, float32 adapters; bfloat16 base where the CPU has native bfloat16, else float32): Contrastive and GRL, each plain, with gradient checkpointing and with
/// GradCache; samples/s (one sample = one query with its positive and negative), approximate MFU and peak memory.
/// The first optimizer step is a warm-up and is not timed.
/// </summary>
public static class TrainingSection
{
    public static void Run(BenchContext ctx)
    {
        if (!ctx.AssetsAvailable)
        {
            ctx.Report.Notes.Add("Training throughput skipped: the qwen3 tokenizer (shared assets) is needed.");
            return;
        }
        int layers = ctx.Quick ? 2 : QwenShape.FullLayers;
        int batch = ctx.Quick ? 2 : 4, steps = ctx.Quick ? 2 : 3, maxLength = 64;
        // The faster base precision on this CPU: bfloat16 where it is native, else float32 (emulated bf16 is ~10x slower).
        var dtype = Ullme.MLNet.Inference.UllmeRuntime.CpuHasNativeBFloat16 ? ScalarType.BFloat16 : ScalarType.Float32;
        string dn = GemmSection.Name(dtype);
        Console.WriteLine($"Training: Qwen2-0.5B shape ({layers} layers), LoRA, {dn} base, batch {batch}");
        var tokenizer = TokenizerLoader.Load(Path.Combine(ctx.AssetsRoot, "tokenizers", "qwen3"));
        var examples = Examples(ctx, batch * (steps + 1));
        using var backbone = QwenShape.Create(layers, dtype);
        var config = QwenShape.Config(layers);
        using var model = new UllmeModel(config, tokenizer, backbone, new EmbeddingDefaults(PoolingMode.Mean, AttentionMode.Bidirectional, true, maxLength),
            new ModelLoadOptions { DType = dtype == ScalarType.BFloat16 ? ModelDType.BFloat16 : ModelDType.Float32 }, $"qwen2-0.5b-shape-random-{layers}l", Path.GetTempPath(), CPU, dtype);

        var configs = new List<(string Name, TrainingStrategy Strategy, bool Checkpointing, int? GradCache)>
        {
            ("Contrastive", TrainingStrategy.Contrastive, false, null),
            ("Contrastive + gradient checkpointing", TrainingStrategy.Contrastive, true, null),
            ("Contrastive + GradCache (chunk 2)", TrainingStrategy.Contrastive, false, 2),
            ("GRL", TrainingStrategy.Grl, false, null),
            ("GRL + gradient checkpointing", TrainingStrategy.Grl, true, null),
            ("GRL + GradCache (chunk 2)", TrainingStrategy.Grl, false, 2),
        };
        if (ctx.Quick) configs = [configs[0], configs[3]];
        var samplesPerSecond = new Dictionary<string, double>();
        foreach (var (name, strategy, checkpointing, gradCache) in configs)
        {
            var options = new FineTuneOptions
            {
                Strategy = strategy, BatchSize = batch, MaxSteps = steps, MaxLength = maxLength, MaxGenerationLength = 2 * maxLength,
                Lora = new LoraOptions(), GradientCheckpointing = checkpointing, GradCacheChunkSize = gradCache,
                Shuffle = false, WarmupSteps = 0, MergeLoraAtEnd = false, Seed = 1,
            };
            Memory.ResetPeak();
            long before = Memory.RssBytes();
            var result = new UllmeFineTuner(model, options).Train(examples);
            long peak = Memory.PeakBytes();
            var h = result.History;
            double seconds = (h[^1].Elapsed - h[0].Elapsed).TotalSeconds;
            int timedSamples = batch * (h.Count - 1);
            double sps = timedSamples / seconds;
            samplesPerSecond[name] = sps;
            double flops = StepFlops(examples.Take(batch).ToList(), tokenizer, options, layers) * (h.Count - 1) / seconds;
            ctx.Report.Add($"Training throughput (Qwen2-0.5B shape, LoRA r16, {dn} base, batch {batch}, ≤{maxLength} tok)", name, new()
            {
                ["samples/s"] = sps,
                ["seconds/step"] = seconds / (h.Count - 1),
                ["approx. model GFLOP/s"] = flops / 1e9,
                ["approx. MFU"] = flops / ctx.GemmPeak[dn],
                ["peak MiB over loaded model"] = Memory.Mib(peak - before),
            }, layers != QwenShape.FullLayers ? $"quick mode: {layers} of 24 layers" : null);
        }
        if (!ctx.Quick)
        {
            ctx.Report.AddRatio("training: gradient checkpointing / plain (Contrastive)", samplesPerSecond["Contrastive + gradient checkpointing"] / samplesPerSecond["Contrastive"],
                "samples/s", "recomputes each layer's forward in the backward");
            ctx.Report.AddRatio("training: GradCache / plain (Contrastive)", samplesPerSecond["Contrastive + GradCache (chunk 2)"] / samplesPerSecond["Contrastive"],
                "samples/s", "an extra no-grad forward of every text");
        }
        ctx.Report.Notes.Add("Training MFU is approximate: model FLOPs = 2·N per token for no-grad passes (reference model) and 4·N for passes "
            + "back-propagated through frozen weights (forward + input gradients; LoRA adapters and LM head ignored), N = non-embedding parameters; "
            + "recomputation by checkpointing/GradCache is not counted as useful work.");
    }

    private static List<TrainingExample> Examples(BenchContext ctx, int count)
    {
        string snli = Path.Combine(ctx.AssetsRoot, "data", "snli", "triplets.jsonl");
        if (File.Exists(snli)) return TrainingData.LoadJsonl(snli).Take(count).ToList();
        var t = ctx.Texts.ShortTexts;
        return Enumerable.Range(0, count).Select(i => new TrainingExample(t[(3 * i) % t.Count], t[(3 * i + 1) % t.Count], [t[(3 * i + 2) % t.Count]])).ToList();
    }

    /// <summary>Approximate model FLOPs of one optimizer step (see the note in the report).</summary>
    private static double StepFlops(IReadOnlyList<TrainingExample> batch, ITextTokenizer tokenizer, FineTuneOptions o, int layers)
    {
        double n = QwenShape.LayerParameters * layers;
        int Len(string s) => Math.Min(o.MaxLength, tokenizer.Encode(s, true).Count);
        double embedTokens = batch.Sum(e => Len(e.Query) + Len(e.Positive) + e.Negatives.Sum(Len));
        double flops = 4 * n * embedTokens;
        if (o.EffectiveWeights.NeedsGeneration)
        {
            int GenLen(TrainingExample e, string c) => Math.Min(o.MaxGenerationLength ?? int.MaxValue,
                tokenizer.Encode(o.BuildGenerationPrompt(e.Query, e.Instruction), true).Count + tokenizer.Encode(c, false).Count);
            double genTokens = batch.Sum(e => GenLen(e, e.Positive) + e.Negatives.Sum(c => GenLen(e, c)));
            flops += (4 * n + 2 * n) * genTokens; // policy (back-propagated) + reference (no grad)
        }
        return flops;
    }
}
