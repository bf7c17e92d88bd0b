using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Modeling;
using Ullme.MLNet.Tokenization;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Training;

/// <summary>
/// The tiny random Llama of Fixtures/decoders/llama (2 layers, hidden 32, vocabulary 64) as a
/// <see cref="UllmeModel"/>, with <see cref="WordTokenizer"/>: trainer tests that need no shared assets.
/// </summary>
internal static class TinyDecoder
{
    public static UllmeModel Load()
    {
        var config = DecoderTestSupport.FixtureConfig("llama");
        var backbone = DecoderTestSupport.LoadFixtureModel("llama");
        return new UllmeModel(config, new WordTokenizer(config.VocabSize), backbone,
            new EmbeddingDefaults(PoolingMode.Mean, AttentionMode.Bidirectional, true, 64), new ModelLoadOptions(),
            "tiny-llama", DecoderTestSupport.FixtureFolder("llama"), CPU, ScalarType.Float32);
    }

    /// <summary>Examples of 3–5 random words each (query, positive, two negatives).</summary>
    public static List<Ullme.MLNet.Training.TrainingExample> Examples(int count, int seed)
    {
        var rng = new Random(seed);
        string Words() => string.Join(' ', Enumerable.Range(0, rng.Next(3, 6)).Select(_ => "w" + rng.Next(0, 60)));
        return Enumerable.Range(0, count).Select(_ => new Ullme.MLNet.Training.TrainingExample(Words(), Words(), [Words(), Words()])).ToList();
    }
}

/// <summary>Whitespace words "wN" → id 3 + N mod (vocabulary − 3); BOS = 1 before every text, EOS = 2, pad = 0.</summary>
internal sealed class WordTokenizer(int vocabulary) : ITextTokenizer
{
    public string Kind => "test words";
    public int VocabSize => vocabulary;
    public int? BosTokenId => 1;
    public int? EosTokenId => 2;
    public int? PadTokenId => 0;
    public int? UnkTokenId => null;
    public IReadOnlyList<int> PrefixTokenIds { get; } = [1];
    public IReadOnlyList<int> SuffixTokenIds { get; } = [];

    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        var ids = new List<int>();
        if (addSpecialTokens) ids.AddRange(PrefixTokenIds);
        foreach (var word in text.Split([' ', '\n', ':'], StringSplitOptions.RemoveEmptyEntries))
            ids.Add(3 + (word.StartsWith('w') && int.TryParse(word[1..], out int n) ? n : word.Sum(c => (int)c)) % (vocabulary - 3));
        return ids;
    }

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) =>
        string.Join(' ', ids.Where(i => !skipSpecialTokens || i > 2).Select(i => "w" + (i - 3)));
}
