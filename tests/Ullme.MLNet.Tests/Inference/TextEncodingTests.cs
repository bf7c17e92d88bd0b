using Ullme.MLNet.Inference;
using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Tests.Inference;

public class TextEncodingTests
{
    /// <summary>One id per whitespace-separated word (id = word length + 10), with configurable specials.</summary>
    private sealed class WordTokenizer(int[] prefix, int[] suffix, int? eos = null) : ITextTokenizer
    {
        public string Kind => "test";
        public int VocabSize => 100;
        public int? BosTokenId => prefix.Length > 0 ? prefix[0] : null;
        public int? EosTokenId => eos;
        public int? PadTokenId => null;
        public int? UnkTokenId => null;
        public IReadOnlyList<int> PrefixTokenIds => prefix;
        public IReadOnlyList<int> SuffixTokenIds => suffix;
        public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
        {
            var body = text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(w => w.Length + 10);
            return addSpecialTokens ? [.. prefix, .. body, .. suffix] : [.. body];
        }
        public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) => string.Join(' ', ids);
    }

    [Fact]
    public void InstructionSitsBetweenPrefixAndTextAndIsMarked()
    {
        var tok = new WordTokenizer([1], [2]);
        var e = TextEncoding.Encode(tok, "aa bbb", "x yy", maxLength: 64);
        Assert.Equal([1, 11, 12, 12, 13, 2], e.Ids);
        Assert.Equal(1, e.InstructionStart);
        Assert.Equal(2, e.InstructionLength);
        Assert.False(e.Truncated);
    }

    [Fact]
    public void TruncationKeepsSpecialTokensAndIsReported()
    {
        var tok = new WordTokenizer([101], [102]);
        var e = TextEncoding.Encode(tok, "a b c d e f", null, maxLength: 5);
        Assert.Equal([101, 11, 11, 11, 102], e.Ids);
        Assert.True(e.Truncated);
    }

    [Fact]
    public void EmptyTextWithoutSpecialTokensBecomesEos()
    {
        var tok = new WordTokenizer([], [], eos: 7);
        var e = TextEncoding.Encode(tok, "", null, maxLength: 8);
        Assert.Equal([7], e.Ids);
    }

    [Fact]
    public void EmptyTextKeepsSpecialTokens()
    {
        var tok = new WordTokenizer([1], []);
        Assert.Equal([1], TextEncoding.Encode(tok, "", null, 8).Ids);
    }

    [Fact]
    public void MaxLengthWithoutRoomForTextIsAClearError()
    {
        var tok = new WordTokenizer([101], [102]);
        Assert.Throws<UllmeException>(() => TextEncoding.Encode(tok, "a", null, maxLength: 2));
    }
}
