namespace Ullme.MLNet.Tokenization;

/// <summary>
/// A model's tokenizer, loaded from its folder. Token ids equal those of Hugging Face's own tokenizers for the
/// same files.
/// </summary>
public interface ITextTokenizer
{
    /// <summary>Human-readable kind, e.g. "byte-level BPE (tokenizer.json)", "SentencePiece (tokenizer.model)".</summary>
    string Kind { get; }

    /// <summary>Number of ids the tokenizer can produce (base vocabulary plus added tokens).</summary>
    int VocabSize { get; }

    int? BosTokenId { get; }
    int? EosTokenId { get; }
    int? PadTokenId { get; }
    int? UnkTokenId { get; }

    /// <summary>Special ids the model's template puts before a single text (e.g. BOS, or BERT's [CLS]).</summary>
    IReadOnlyList<int> PrefixTokenIds { get; }

    /// <summary>Special ids the model's template puts after a single text (e.g. BERT's [SEP], or an EOS).</summary>
    IReadOnlyList<int> SuffixTokenIds { get; }

    /// <summary>Encodes <paramref name="text"/>. With <paramref name="addSpecialTokens"/> the result is
    /// <see cref="PrefixTokenIds"/> + ids + <see cref="SuffixTokenIds"/>, exactly as HF's tokenizer(text) would give.</summary>
    IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true);

    /// <summary>Turns ids back into text.</summary>
    string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true);
}
