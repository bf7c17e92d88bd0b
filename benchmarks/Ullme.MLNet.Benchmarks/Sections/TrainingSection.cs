using System.Diagnostics;
using System.Globalization;
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
/// GradCache; samples/s (one sample = one query with its positive and negative), approximate MFU and peak memory,
/// each configuration in its own process.
/// The first optimizer step is a warm-up and is not timed.
/// </summary>
public static class TrainingSection
{
    private static readonly (string Name, TrainingStrategy Strategy, bool Checkpointing, int? GradCache)[] Configs =
    [
        ("Contrastive", TrainingStrategy.Contrastive, false, null),
        ("Contrastive + gradient checkpointing", TrainingStrategy.Contrastive, true, null),
        ("Contrastive + GradCache (chunk 2)", TrainingStrategy.Contrastive, false, 2),
        ("GRL", TrainingStrategy.Grl, false, null),
        ("GRL + gradient checkpointing", TrainingStrategy.Grl, true, null),
        ("GRL + GradCache (chunk 2)", TrainingStrategy.Grl, false, 2),
    ];

    public static void Run(BenchContext ctx)
    {
        if (!ctx.AssetsAvailable)
        {
            ctx.Report.Notes.Add("Training throughput skipped: the qwen3 tokenizer (shared assets) is needed.");
            return;
        }
        var (layers, batch, steps, maxLength, dtype) = Shape(ctx.Quick);
        string dn = GemmSection.Name(dtype);
        Console.WriteLine($"Training: Qwen2-0.5B shape ({layers} layers), LoRA, {dn} base, batch {batch}, each configuration in its own process");
        int[] indices = ctx.Quick ? [0, 3] : [0, 1, 2, 3, 4, 5];
        var samplesPerSecond = new Dictionary<string, double>();
        foreach (int i in indices)
        {
            // A child process per configuration: its peak RSS is its own (in one process, memory kept by the
            // allocator after one configuration would hide the next one's peak).
            var values = RunChild(ctx, i);
            if (values is null) { ctx.Report.Notes.Add($"Training configuration '{Configs[i].Name}' failed; see the console output."); continue; }
            samplesPerSecond[Configs[i].Name] = values["samples/s"];
            values["approx. MFU"] = values["approx. model GFLOP/s"] * 1e9 / ctx.GemmPeak[dn];
            ctx.Report.Add($"Training throughput (Qwen2-0.5B shape, LoRA r16, {dn} base, batch {batch}, ≤{maxLength} tok)", Configs[i].Name, values,
                layers != QwenShape.FullLayers ? $"quick mode: {layers} of 24 layers" : null);
        }
        if (!ctx.Quick && samplesPerSecond.Count == Configs.Length)
        {
            ctx.Report.AddRatio("training: gradient checkpointing / plain (Contrastive)", samplesPerSecond["Contrastive + gradient checkpointing"] / samplesPerSecond["Contrastive"],
                "samples/s", "recomputes each layer's forward in the backward");
            ctx.Report.AddRatio("training: GradCache / plain (Contrastive)", samplesPerSecond["Contrastive + GradCache (chunk 2)"] / samplesPerSecond["Contrastive"],
                "samples/s", "an extra no-grad forward of every text");
            ctx.Report.AddRatio("training: GRL / Contrastive", samplesPerSecond["GRL"] / samplesPerSecond["Contrastive"],
                "samples/s", "causal generation passes (policy with grad + reference without) over prompt + candidate, LM head on candidate tokens");
        }
        ctx.Report.Notes.Add("Training MFU is approximate: model FLOPs = 2·N per token for no-grad passes (reference model) and 4·N for passes "
            + "back-propagated through frozen weights (forward + input gradients; LoRA adapters and LM head ignored), N = non-embedding parameters; "
            + "recomputation by checkpointing/GradCache is not counted as useful work. Peak memory: the child process's VmHWM minus its RSS "
            + "after the model was built.");
    }

    private static (int Layers, int Batch, int Steps, int MaxLength, ScalarType DType) Shape(bool quick) =>
        (quick ? 2 : QwenShape.FullLayers, quick ? 2 : 4, quick ? 2 : 3, 64,
         // The faster base precision on this CPU: bfloat16 where it is native, else float32 (emulated bf16 is ~10x slower).
         Ullme.MLNet.Inference.UllmeRuntime.CpuHasNativeBFloat16 ? ScalarType.BFloat16 : ScalarType.Float32);

    /// <summary>Runs `train-config` in a child process of this program and reads its one JSON line.</summary>
    private static Dictionary<string, double>? RunChild(BenchContext ctx, int index)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        string? entry = System.Reflection.Assembly.GetEntryAssembly()?.Location;
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet" && entry is not null) psi.ArgumentList.Add(entry);
        foreach (string a in new[] { "train-config", index.ToString(CultureInfo.InvariantCulture), ctx.Quick ? "quick" : "full", ctx.AssetsRoot, ctx.Threads.ToString(CultureInfo.InvariantCulture) })
            psi.ArgumentList.Add(a);
        using var child = Process.Start(psi)!;
        string? json = null;
        while (child.StandardOutput.ReadLine() is { } line)
        {
            if (line.StartsWith("{", StringComparison.Ordinal)) json = line;
            else Console.WriteLine("    " + line);
        }
        child.WaitForExit();
        if (child.ExitCode != 0 || json is null) return null;
        var values = System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, double>>(json)!;
        Console.WriteLine($"  [training] {Configs[index].Name}: " + string.Join(", ", values.Select(kv => $"{kv.Key}={BenchReport.Fmt(kv.Value)}")));
        return values;
    }

    /// <summary>`train-config index quick|full assets threads`: one configuration, one JSON line on stdout.</summary>
    public static int RunConfig(string[] args)
    {
        int index = int.Parse(args[0], CultureInfo.InvariantCulture);
        bool quick = args[1] == "quick";
        string assets = args[2];
        Ullme.MLNet.Inference.UllmeRuntime.SetThreads(int.Parse(args[3], CultureInfo.InvariantCulture));
        var (layers, batch, steps, maxLength, dtype) = Shape(quick);
        var (name, strategy, checkpointing, gradCache) = Configs[index];
        var tokenizer = TokenizerLoader.Load(Path.Combine(assets, "tokenizers", "qwen3"));
        var examples = Examples(assets, batch * (steps + 1));
        using var backbone = QwenShape.Create(layers, dtype);
        var config = QwenShape.Config(layers);
        using var model = new UllmeModel(config, tokenizer, backbone, new EmbeddingDefaults(PoolingMode.Mean, AttentionMode.Bidirectional, true, maxLength),
            new ModelLoadOptions { DType = dtype == ScalarType.BFloat16 ? ModelDType.BFloat16 : ModelDType.Float32 }, $"qwen2-0.5b-shape-random-{layers}l", Path.GetTempPath(), CPU, dtype);
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
        int timedSteps = h.Count - 1;
        double flops = StepFlops(examples.Take(batch).ToList(), tokenizer, options, layers) * timedSteps / seconds;
        var values = new Dictionary<string, double>
        {
            ["samples/s"] = batch * timedSteps / seconds,
            ["seconds/step"] = seconds / timedSteps,
            ["approx. model GFLOP/s"] = flops / 1e9,
            ["peak MiB over built model"] = Memory.Mib(peak - before),
            ["peak RSS MiB"] = Memory.Mib(peak),
        };
        Console.WriteLine($"{name}: {timedSteps} timed steps");
        Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(values));
        return 0;
    }

    private static List<TrainingExample> Examples(string assets, int count)
    {
        string snli = Path.Combine(assets, "data", "snli", "triplets.jsonl");
        if (File.Exists(snli)) return TrainingData.LoadJsonl(snli).Take(count).ToList();
        var t = BenchTexts.Load(assets, 256, 0).ShortTexts;
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
