using System.Text.Json.Nodes;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tokenization;
using HfTokenizer = Tokenizers.DotNet.Tokenizer;

namespace Ullme.MLNet.Tests.Tokenization;

/// <summary>
/// Pipeline options the shared files do not use (Metaspace schemes, ignore_merges, split behaviours, added-token
/// flags, BERT casing options): each is a real tokenizer.json edited one way and compared with HF's Rust tokenizers.
/// </summary>
public sealed class HfVariantTests
{
    private static readonly string[] ExtraTexts =
    [
        "the cat sat on a category of cats, cat-like cat",
        " <|im_start|>  user  <|im_end|>  x",
        "cafe\u0301 café CAFÉ",
        "a-b--c - d 12-34 x_y",
        "▁already ▁prefixed",
        "1234567 89 0.5 x2024y ١٢٣٤٥ ½¾ don'T WE'LL \r\n\r\n  \t 😀👍🏽 𝐀𝐁 e\u0301 ",
    ];

    private static IEnumerable<string> Texts => TokenizerTestData.Varied.Concat(ExtraTexts).Concat(TokenizerTestData.Real.Take(300));

    private static void AssertVariantEqualsHf(string sourceJson, Action<JsonNode> edit)
    {
        using var temp = new TempDir();
        var node = JsonNode.Parse(File.ReadAllText(sourceJson))!;
        edit(node);
        string path = temp.File("tokenizer.json");
        File.WriteAllText(path, node.ToJsonString());
        var ours = TokenizerLoader.Load(path);
        using var reference = new HfTokenizer(path);
        using var plain = new HfTokenizer(TokenizerTestData.WithoutPostProcessor(path, temp.Path));
        var texts = Texts.ToList();
        var failures = TokenizerComparison.Compare(ours, reference, plain, texts);
        Assert.True(failures.Count == 0, TokenizerComparison.Report(failures, texts.Count));
    }

    private static string Llama2 => Assets.Path("tokenizers", "llama2", "tokenizer.json");

    private static string Qwen3 => Assets.Path("tokenizers", "qwen3", "tokenizer.json");

    private static JsonObject Metaspace(string scheme, bool split) => new()
    {
        ["type"] = "Metaspace", ["replacement"] = "\u2581", ["prepend_scheme"] = scheme, ["split"] = split,
    };

    [AssetTheory]
    [InlineData("first", false)]
    [InlineData("always", true)]
    [InlineData("never", false)]
    public void Llama2_MetaspacePreTokenizer_EqualsHf(string scheme, bool split) => AssertVariantEqualsHf(Llama2, j =>
    {
        j["normalizer"] = null;
        j["pre_tokenizer"] = Metaspace(scheme, split);
        j["decoder"] = Metaspace(scheme, split);
    });

    [AssetFact]
    public void Llama2_WithoutByteFallback_FusesUnknowns_EqualsHf() => AssertVariantEqualsHf(Llama2, j =>
    {
        j["model"]!["byte_fallback"] = false;
    });

    /// <summary>
    /// We merge each "▁word" of a SentencePiece-style text on its own (and cache it), which is only exact while no merge
    /// joins a symbol ending in a non-▁ char to one starting with ▁. A file with such a merge must still give HF's ids.
    /// </summary>
    [AssetFact]
    public void Llama2_MergeAcrossWordMarker_EqualsHf() => AssertVariantEqualsHf(Llama2, j =>
    {
        var model = j["model"]!;
        model["vocab"]!["s\u2581"] = 32000;
        model["vocab"]!["e\u2581"] = 32001;
        var merges = model["merges"]!.AsArray();
        merges.Insert(0, "s \u2581");
        merges.Insert(0, "e \u2581");
    });

    [AssetFact]
    public void Qwen3_IgnoreMerges_EqualsHf() => AssertVariantEqualsHf(Qwen3, j => j["model"]!["ignore_merges"] = true);

    [AssetFact]
    public void Qwen3_ByteLevelWithPrefixSpaceAndGpt2Regex_EqualsHf() => AssertVariantEqualsHf(Qwen3, j =>
    {
        j["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true };
    });

    /// <summary>Llama-3's split regex (numbers in runs of up to three digits), which our scanner implements.</summary>
    [AssetFact]
    public void Qwen3_WithLlama3SplitPattern_EqualsHf() => AssertVariantEqualsHf(Qwen3, j =>
    {
        var split = j["pre_tokenizer"]!["pretokenizers"]![0]!;
        Assert.Equal(SplitPatternScanner.Qwen2Pattern, (string?)split["pattern"]!["Regex"]);
        split["pattern"]!["Regex"] = SplitPatternScanner.Llama3Pattern;
    });

    [AssetFact]
    public void Qwen3_SplitBehaviours_EqualHf() => AssertVariantEqualsHf(Qwen3, j =>
    {
        JsonObject Split(string kind, string pattern, string behavior, bool invert) => new()
        {
            ["type"] = "Split", ["pattern"] = new JsonObject { [kind] = pattern }, ["behavior"] = behavior, ["invert"] = invert,
        };
        j["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                Split("String", " ", "MergedWithNext", false),
                Split("String", "-", "MergedWithPrevious", false),
                Split("Regex", @"\p{N}+", "Contiguous", false),
                Split("Regex", @"[a-z]+", "Isolated", true),
                new JsonObject { ["type"] = "Digits", ["individual_digits"] = true },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false }),
        };
    });

    [AssetFact]
    public void Qwen3_AddedTokenFlags_EqualHf() => AssertVariantEqualsHf(Qwen3, j =>
    {
        foreach (var t in j["added_tokens"]!.AsArray())
        {
            if ((string?)t!["content"] == "<|im_start|>") t["lstrip"] = true;
            if ((string?)t!["content"] == "<|im_end|>") t["rstrip"] = true;
        }
        j["added_tokens"]!.AsArray().Add(new JsonObject
        {
            ["id"] = 4616, ["content"] = "cat", ["single_word"] = true, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = true, ["special"] = false,
        });
        // HF re-assigns added-token ids: "cat" is in the vocabulary (4616), so the next new token gets 151669.
        // NFD content: matched after NFC normalisation of both the token and the text.
        j["added_tokens"]!.AsArray().Add(new JsonObject
        {
            ["id"] = 151669, ["content"] = "cafe\u0301", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = true, ["special"] = false,
        });
    });

    [AssetTheory]
    [InlineData(false, null, true)]
    [InlineData(true, false, true)]
    [InlineData(false, true, false)]
    public void Bert_NormalizerOptions_EqualHf(bool lowercase, bool? stripAccents, bool chineseChars)
    {
        using var temp = new TempDir();
        string json = HfEqualityTests.BuildBertTokenizerJson(HfEqualityTests.WriteMiniLmVocab(temp), temp);
        AssertVariantEqualsHf(json, j =>
        {
            j["normalizer"]!["lowercase"] = lowercase;
            j["normalizer"]!["strip_accents"] = stripAccents;
            j["normalizer"]!["handle_chinese_chars"] = chineseChars;
        });
    }
}
