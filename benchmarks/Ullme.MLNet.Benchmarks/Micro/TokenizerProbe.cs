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
        if (Environment.GetEnvironmentVariable("PROBE_COLD") == "1") ColdStages(json, texts);
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

    private delegate int[] MergeFn(ReadOnlySpan<char> word);

    /// <summary>PROBE_COLD=1: where a first pass over unseen text goes (fresh instances; JIT warmed first).</summary>
    private static void ColdStages(string json, List<string> texts)
    {
        var flags = System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance;
        for (int r = 0; r < 5; r++)
        {
            var tok = (HuggingFaceTokenizer)TokenizerLoader.Load(json);
            if (Environment.GetEnvironmentVariable("PROBE_GC") == "1") { GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect(); }
            int gcs = GC.CollectionCount(0), gcs2 = GC.CollectionCount(2);
            var norm = (HfNormalizer?)typeof(HuggingFaceTokenizer).GetField("_normalizer", flags)!.GetValue(tok);
            var pre = (PreTokenizerStep[])typeof(HuggingFaceTokenizer).GetField("_preTokenizers", flags)!.GetValue(tok)!;
            var sw = Stopwatch.StartNew();
            var normalized = texts.Select(t => norm?.Normalize(t) ?? t).ToList();
            double tn = sw.Elapsed.TotalSeconds;
            var scratch = EncodeScratch.Current;
            double[] tp = new double[pre.Length];
            var words = new List<string>();
            foreach (string t in normalized)
            {
                PieceList input = scratch.A, output = scratch.B;
                input.Clear();
                input.Add(t, true);
                for (int k = 0; k < pre.Length; k++)
                {
                    sw.Restart();
                    output.Clear();
                    for (int i = 0; i < input.Count; i++) pre[k].Split(input[i], input.Pieces[i].AtOrigin, output, scratch);
                    tp[k] += sw.Elapsed.TotalSeconds;
                    (input, output) = (output, input);
                }
                for (int i = 0; i < input.Count; i++) words.Add(input[i].ToString());
            }
            var model = (ITokenModel)typeof(HuggingFaceTokenizer).GetField("_model", flags)!.GetValue(tok)!;
            var ids = new List<int>();
            if (pre.Length == 0) words = normalized;
            sw.Restart();
            foreach (string w in words) { ids.Clear(); model.Tokenize(w, ids); }
            double tm = sw.Elapsed.TotalSeconds;
            sw.Restart();
            foreach (string w in words) { ids.Clear(); model.Tokenize(w, ids); }
            double tmw = sw.Elapsed.TotalSeconds;
            var distinct = words.Distinct().ToList();
            var bpe = TokenizerLoader.Load(json);
            var bm = typeof(HuggingFaceTokenizer).GetField("_model", flags)!.GetValue(bpe)!;
            var mw = bm.GetType().GetMethod("MergeWord", flags)!;
            var del = mw.CreateDelegate<MergeFn>(bm);
            sw.Restart();
            foreach (string w in distinct) del(w);
            double tmerge = sw.Elapsed.TotalSeconds;
            var cache = new WordCache(65536);
            sw.Restart();
            foreach (string w in distinct) cache.Add(w, [1, 2]);
            Console.WriteLine($"  merge-only {tmerge * 1e3:F1} ms, cache-add-only {sw.Elapsed.TotalSeconds * 1e3:F1} ms for {distinct.Count} words");
            gcs = GC.CollectionCount(0) - gcs; gcs2 = GC.CollectionCount(2) - gcs2;
            var fresh = TokenizerLoader.Load(json);
            if (Environment.GetEnvironmentVariable("PROBE_GC") == "1") { GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect(); }
            sw.Restart();
            foreach (string t in texts) fresh.Encode(t);
            double te = sw.Elapsed.TotalSeconds;
            sw.Restart();
            foreach (string t in texts) fresh.Encode(t);
            double tew = sw.Elapsed.TotalSeconds;
            sw.Restart();
            foreach (string t in normalized)
            {
                PieceList input = scratch.A, output = scratch.B;
                input.Clear();
                input.Add(t, true);
                foreach (var step in pre)
                {
                    output.Clear();
                    for (int i = 0; i < input.Count; i++) step.Split(input[i], input.Pieces[i].AtOrigin, output, scratch);
                    (input, output) = (output, input);
                }
                ids.Clear();
                for (int i = 0; i < input.Count; i++) model.Tokenize(input[i], ids);
            }
            Console.WriteLine($"  warm: encode {tew * 1e3:F1} ms, pre-tokenize+model {sw.Elapsed.TotalSeconds * 1e3:F1} ms");
            Console.WriteLine($"  cold: normalize {tn * 1e3:F1} ms, pre-tokenizers [{string.Join(", ", pre.Select((p, k) => $"{p.GetType().Name} {tp[k] * 1e3:F1}"))}] ms, " +
                $"model cold {tm * 1e3:F1} ms (warm {tmw * 1e3:F1}), {words.Count} words ({words.Distinct().Count()} distinct), gen0 {gcs} gen2 {gcs2}; fresh encode {te * 1e3:F1} ms");
        }
    }
}
