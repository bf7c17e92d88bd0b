using System.Diagnostics;
using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Benchmarks;

/// <summary>`probe-tokenizer [name] [seconds]`: one tokenizer of the shared folder (default llama2), ours vs HF's Rust
/// tokenizers on the benchmark texts, interleaved rounds in one process so the ratio survives a loaded machine.</summary>
public static class TokenizerProbe
{
    public static int Run(string[] args)
    {
        string name = args.Length > 0 ? args[0] : "llama2";
        double seconds = args.Length > 1 ? double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 6;
        string assets = BenchTexts.AssetsRoot(null);
        var b = BenchTexts.Load(assets, 2000, 256);
        var texts = b.ShortTexts.Concat(b.LongTexts).ToList();
        string json = Path.Combine(assets, "tokenizers", name, "tokenizer.json");
        var ours = TokenizerLoader.Load(json);
        using var hf = new Tokenizers.DotNet.Tokenizer(vocabPath: json);
        // Cold: the first pass over texts never seen (our per-word cache empty); HF has run the texts once before.
        var cold = Stopwatch.StartNew();
        foreach (string t in texts) ours.Encode(t);
        double oursCold = cold.Elapsed.TotalSeconds;
        foreach (string t in texts) hf.Encode(t);
        cold.Restart();
        foreach (string t in texts) hf.Encode(t);
        Console.WriteLine($"  first pass incl. JIT (our cache cold): ours {oursCold * 1e3:F0} ms, HF {cold.Elapsed.TotalSeconds * 1e3:F0} ms");
        int mismatches = texts.Count(t => !ours.Encode(t).SequenceEqual(hf.Encode(t).Select(x => (int)x)));
        if (Environment.GetEnvironmentVariable("PROBE_STAGES") == "1") Stages((HuggingFaceTokenizer)ours, texts);
        double oursBest = double.MaxValue, hfBest = double.MaxValue;
        long tokens = 0;
        var total = Stopwatch.StartNew();
        while (total.Elapsed.TotalSeconds < seconds)
        {
            var sw = Stopwatch.StartNew();
            long n = 0;
            foreach (string t in texts) n += ours.Encode(t).Count;
            oursBest = Math.Min(oursBest, sw.Elapsed.TotalSeconds);
            tokens = n;
            sw.Restart();
            foreach (string t in texts) hf.Encode(t);
            hfBest = Math.Min(hfBest, sw.Elapsed.TotalSeconds);
        }
        Console.WriteLine($"{name}: {texts.Count} texts, {tokens} tokens, {mismatches} differ from HF; load {Machine.LoadAverage()}");
        Console.WriteLine($"  ours {tokens / oursBest:N0} tokens/s, HF {tokens / hfBest:N0} tokens/s, ours/HF = {hfBest / oursBest:F2} (best of interleaved rounds)");
        return 0;
    }

    private static void Stages(HuggingFaceTokenizer tok, List<string> texts)
    {
        var flags = System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance;
        var model = (ITokenModel)typeof(HuggingFaceTokenizer).GetField("_model", flags)!.GetValue(tok)!;
        var norm = (HfNormalizer?)typeof(HuggingFaceTokenizer).GetField("_normalizer", flags)!.GetValue(tok);
        Console.WriteLine($"  model {model.GetType().Name}, split={model.GetType().GetField("_splitAtMetaspace", flags)?.GetValue(model)}");
        var normalized = texts.Select(t => norm?.Normalize(t) ?? t).ToList();
        var ids = new List<int>();
        for (int r = 0; r < 3; r++)
        {
            var sw = Stopwatch.StartNew();
            foreach (string t in texts) norm?.Normalize(t);
            double tn = sw.Elapsed.TotalSeconds;
            sw.Restart();
            foreach (string t in normalized) { ids.Clear(); model.Tokenize(t, ids); }
            double tm = sw.Elapsed.TotalSeconds;
            sw.Restart();
            foreach (string t in texts) tok.Encode(t);
            Console.WriteLine($"  normalize {tn * 1e3:F1} ms, model {tm * 1e3:F1} ms, encode {sw.Elapsed.TotalSeconds * 1e3:F1} ms");
        }
    }
}
