using System.Diagnostics;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;

namespace Ullme.MLNet.Samples;

/// <summary>
/// Measures resident memory (Linux /proc) of one embedding call of <c>batch</c> texts of exactly <c>tokens</c> tokens:
/// RSS after loading, then the peak (VmHWM, reset just before the call) while embedding. This is the figure quoted
/// in docs/mlnet.md; it is a measurement tool, not a test.
/// </summary>
public static class MemorySample
{
    public static int Run(string model, int batch, int tokens, string dtype)
    {
        long before = Rss();
        var options = new ModelLoadOptions { DType = dtype.Equals("bfloat16", StringComparison.OrdinalIgnoreCase) ? ModelDType.BFloat16 : ModelDType.Float32 };
        using var m = UllmeModel.Load(model, options);
        var engine = new EmbeddingEngine(m);
        long loaded = Rss();

        // Texts long enough to be truncated to exactly `tokens` tokens.
        string word = "embedding ";
        var texts = Enumerable.Range(0, batch).Select(i => $"text {i}: " + string.Concat(Enumerable.Repeat(word, tokens * 2))).ToList();
        var eo = new EmbeddingOptions { BatchSize = batch, MaxLength = tokens };
        engine.Embed(texts.Take(2).ToList(), eo); // warm-up (lazy allocations, JIT)
        GC.Collect();
        long baseline = Rss();
        ResetPeak();
        var sw = Stopwatch.StartNew();
        long seenTokens = 0;
        engine.Embed(texts, eo, new Progress(p => seenTokens = p.Tokens));
        sw.Stop();
        long peak = Peak();
        Console.WriteLine($"model {m.ModelId}: {m.Config.ModelType}, hidden {m.EmbeddingDimension}, {m.Config.NumHiddenLayers} layers, {options.DType}");
        Console.WriteLine($"RSS before load {Mb(before)}, after load {Mb(loaded)}, before batch {Mb(baseline)}");
        Console.WriteLine($"batch {batch} x {tokens} tokens ({seenTokens} tokens): peak RSS {Mb(peak)} (+{Mb(peak - baseline)} over the loaded model), {sw.ElapsedMilliseconds} ms");
        return 0;
    }

    private sealed class Progress(Action<EngineProgress> a) : IProgress<EngineProgress>
    {
        public void Report(EngineProgress value) => a(value);
    }

    private static string Mb(long bytes) => $"{bytes / (1024.0 * 1024.0):F0} MiB";

    private static long Rss() => Status("VmRSS:");
    private static long Peak() => Status("VmHWM:");

    private static long Status(string key)
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line[key.Length..].Trim().Split(' ')[0]) * 1024;
        return 0;
    }

    /// <summary>Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).</summary>
    private static void ResetPeak() => File.WriteAllText("/proc/self/clear_refs", "5");
}

/// <summary>
/// Writes a randomly initialised model with Qwen2-0.5B's shape (24 layers, hidden 896, 14/2 heads, MLP 4864,
/// vocab 151,936, tied embeddings; ~494M parameters, ~2 GB float32) and the Qwen tokenizer from the shared assets,
/// for measuring memory and speed of a real-sized decoder without downloading one.
/// </summary>
public static class RandomQwen2
{
    public const string Config = """
        {
          "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
          "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
          "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
          "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true, "vocab_size": 151936,
          "bos_token_id": 151643, "eos_token_id": 151643, "sliding_window": 32768, "use_sliding_window": false,
          "max_window_layers": 21, "initializer_range": 0.02, "torch_dtype": "float32"
        }
        """;

    public static int Run(string folder, string? assets)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), Config);
        string tokenizers = Path.Combine(SampleData.AssetsRoot(assets), "tokenizers", "qwen3");
        foreach (string f in new[] { "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(tokenizers, f), Path.Combine(folder, f), overwrite: true);
        TorchSharp.torch.manual_seed(0);
        using var model = Ullme.MLNet.Modeling.DecoderModel.Create(Ullme.MLNet.Modeling.ModelConfig.Parse(Config));
        var tensors = model.state_dict().Select(kv => new KeyValuePair<string, TorchSharp.torch.Tensor>(kv.Key, kv.Value)).ToList();
        Ullme.MLNet.Modeling.SafeTensors.Save(Path.Combine(folder, "model.safetensors"), tensors);
        long parameters = tensors.Where(t => t.Key != "lm_head.weight").Sum(t => t.Value.numel());
        Console.WriteLine($"wrote {folder}: {parameters / 1e6:F0}M parameters");
        return 0;
    }
}
