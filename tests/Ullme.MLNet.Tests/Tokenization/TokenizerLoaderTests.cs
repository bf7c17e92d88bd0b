using System.Text.Json;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Tests.Tokenization;

/// <summary>tokenizer.model (SentencePiece), folder resolution, config handling, errors and thread safety.</summary>
public sealed class TokenizerLoaderTests
{
    [AssetFact]
    public void Stories260K_TokenizerModel_ReproducesGoldenIdsAndDecodes()
    {
        var tok = TokenizerLoader.Load(Assets.Stories260K);
        Assert.Equal("SentencePiece (tokenizer.model)", tok.Kind);
        Assert.Equal(512, tok.VocabSize);
        Assert.Equal(1, tok.BosTokenId);
        Assert.Equal(2, tok.EosTokenId);
        Assert.Equal(0, tok.UnkTokenId);
        Assert.Null(tok.PadTokenId);
        Assert.Equal([1], tok.PrefixTokenIds);
        Assert.Empty(tok.SuffixTokenIds);

        using var golden = JsonDocument.Parse(File.ReadAllText(Path.Combine(Assets.Stories260K, "golden", "tokens.json")));
        int checkedItems = 0;
        foreach (var item in golden.RootElement.GetProperty("items").EnumerateArray())
        {
            string text = item.GetProperty("text").GetString()!;
            int[] expected = item.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.Equal(expected, tok.Encode(text));
            Assert.Equal(expected[1..], tok.Encode(text, addSpecialTokens: false));
            Assert.Equal(item.GetProperty("decoded").GetString(), tok.Decode(expected));
            checkedItems++;
        }
        Assert.Equal(6, checkedItems);
    }

    /// <summary>Ids from Python sentencepiece 0.1.97 ([1] + sp.encode(text)) for edge cases the golden file avoids.</summary>
    [AssetTheory]
    [InlineData("a", new[] { 1, 261 })]
    [InlineData("x", new[] { 1, 410, 444 })]
    [InlineData("3", new[] { 1, 410, 472 })]
    [InlineData("🍰", new[] { 1, 410, 243, 162, 144, 179 })]
    [InlineData(" a ", new[] { 1, 261 })]
    [InlineData("\t", new[] { 1, 410, 12 })]
    [InlineData("  ", new[] { 1 })]
    [InlineData("a\tb", new[] { 1, 261, 12, 430 })]
    [InlineData("Hi  there  ", new[] { 1, 320, 417, 383 })]
    [InlineData("中", new[] { 1, 410, 231, 187, 176 })]
    [InlineData("a<s>b</s>c", new[] { 1, 261, 1, 268, 2, 280 })]
    public void Stories260K_EdgeCases_EqualSentencePiece(string text, int[] expected)
    {
        var tok = TokenizerLoader.Load(Path.Combine(Assets.Stories260K, "tokenizer.model"));
        Assert.Equal(expected, tok.Encode(text));
    }

    [AssetFact]
    public void Stories260K_AddEosToken_AppendsEos()
    {
        using var temp = new TempDir();
        File.Copy(Path.Combine(Assets.Stories260K, "tokenizer.model"), temp.File("tokenizer.model"));
        File.WriteAllText(temp.File("tokenizer_config.json"),
            """{"tokenizer_class": "LlamaTokenizer", "add_bos_token": false, "add_eos_token": true, "bos_token": {"content": "<s>"}, "eos_token": "</s>"}""");
        var tok = TokenizerLoader.Load(temp.Path);
        Assert.Empty(tok.PrefixTokenIds);
        Assert.Equal([2], tok.SuffixTokenIds);
        Assert.Equal([403, 407, 2], tok.Encode("Once upon"));
    }

    [AssetFact]
    public void FilePath_IsAccepted_AndFolderPrefersTokenizerJson()
    {
        var fromFile = TokenizerLoader.Load(Assets.Path("tokenizers", "qwen3", "tokenizer.json"));
        var fromFolder = TokenizerLoader.Load(Assets.Path("tokenizers", "qwen3"));
        Assert.Equal(fromFolder.Encode("Hello world"), fromFile.Encode("Hello world"));
        Assert.Equal(151669, fromFolder.VocabSize);
        Assert.Equal(151643, fromFolder.PadTokenId); // tokenizer_config.json pad_token <|endoftext|>
        Assert.Empty(fromFolder.PrefixTokenIds);
        Assert.Equal("byte-level BPE (encoder.json + vocab.bpe)", TokenizerLoader.Load(Assets.Path("tokenizers", "gpt2", "vocab.bpe")).Kind);
    }

    [Fact]
    public void MissingFolder_ThrowsNamingIt()
    {
        string path = Path.Combine(Path.GetTempPath(), "no-such-tokenizer-" + Guid.NewGuid().ToString("N"));
        var e = Assert.Throws<UllmeException>(() => TokenizerLoader.Load(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void FolderWithoutTokenizerFiles_ThrowsNamingFolderAndFilesLookedFor()
    {
        using var temp = new TempDir();
        File.WriteAllText(temp.File("config.json"), "{}");
        var e = Assert.Throws<UllmeException>(() => TokenizerLoader.Load(temp.Path));
        Assert.Contains(temp.Path, e.Message);
        foreach (string name in new[] { "tokenizer.json", "tokenizer.model", "vocab.txt", "encoder.json", "vocab.bpe" })
            Assert.Contains(name, e.Message);
    }

    [Theory]
    [InlineData("{ this is not json")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}""")]
    [InlineData("""{"model": {"type": "Unigram", "vocab": []}}""")]
    [InlineData("""{"normalizer": {"type": "Precompiled"}, "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}}""")]
    [InlineData("""[1, 2, 3]""")]
    public void MalformedTokenizerJson_ThrowsNamingTheFile(string content)
    {
        using var temp = new TempDir();
        File.WriteAllText(temp.File("tokenizer.json"), content);
        var e = Assert.Throws<UllmeException>(() => TokenizerLoader.Load(temp.Path));
        Assert.Contains(temp.File("tokenizer.json"), e.Message);
    }

    [Fact]
    public void MalformedTokenizerConfig_ThrowsNamingTheFile()
    {
        using var temp = new TempDir();
        File.WriteAllText(temp.File("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n");
        File.WriteAllText(temp.File("tokenizer_config.json"), "{\"do_lower_case\": ");
        var e = Assert.Throws<UllmeException>(() => TokenizerLoader.Load(temp.Path));
        Assert.Contains(temp.File("tokenizer_config.json"), e.Message);
    }

    [Fact]
    public void CorruptTokenizerModel_ThrowsNamingTheFile()
    {
        using var temp = new TempDir();
        File.WriteAllBytes(temp.File("tokenizer.model"), [0xFF, 0xFF, 0xFF, 0x01, 0x02]);
        var e = Assert.Throws<UllmeException>(() => TokenizerLoader.Load(temp.Path));
        Assert.Contains(temp.File("tokenizer.model"), e.Message);
    }

    [Fact]
    public void VocabTxt_Config_CasedBert_KeepsCaseAndAccents()
    {
        using var temp = new TempDir();
        File.WriteAllLines(temp.File("vocab.txt"), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Café", "café", "cafe", "!", "##s"]);
        File.WriteAllText(temp.File("tokenizer_config.json"), """{"do_lower_case": false, "model_max_length": 512}""");
        var tok = (HuggingFaceTokenizer)TokenizerLoader.Load(temp.Path);
        Assert.Equal(512, tok.ModelMaxLength);
        Assert.Equal([2, 5, 8, 3], tok.Encode("Café!"));
        Assert.Equal([2, 6, 9, 1, 3], tok.Encode("cafés CAFE"));
        Assert.Equal("Café!", tok.Decode(tok.Encode("Café!")));
    }

    [AssetFact]
    public void ConcurrentEncode_FromEightThreads_EqualsSequential()
    {
        var tokenizers = new[]
        {
            TokenizerLoader.Load(Assets.Path("tokenizers", "qwen3")),
            TokenizerLoader.Load(Assets.Path("tokenizers", "llama2")),
            TokenizerLoader.Load(Assets.Path("tokenizers", "gpt2")),
            TokenizerLoader.Load(Assets.Stories260K),
        };
        var texts = TokenizerTestData.All.Take(600).ToArray();
        foreach (var tok in tokenizers)
        {
            // Sequential reference from a fresh instance, so the shared one starts with a cold cache under contention.
            var fresh = TokenizerLoader.Load(((HuggingFaceTokenizer)tok).Source);
            var expected = texts.Select(t => fresh.Encode(t).ToArray()).ToArray();
            var results = new int[8][][];
            var threads = Enumerable.Range(0, 8).Select(k => new Thread(() =>
            {
                // Every thread walks all texts from a different start, so threads hit the same words at the same time.
                var mine = new int[texts.Length][];
                for (int j = 0; j < texts.Length; j++)
                {
                    int i = (j + k * texts.Length / 8) % texts.Length;
                    mine[i] = tok.Encode(texts[i]).ToArray();
                }
                results[k] = mine;
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            for (int k = 0; k < 8; k++)
                for (int i = 0; i < texts.Length; i++)
                    Assert.True(expected[i].AsSpan().SequenceEqual(results[k][i]), $"{tok.Kind}: thread {k}, text {i} differs from sequential");
        }
    }
}
