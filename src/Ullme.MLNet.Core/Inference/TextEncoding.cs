using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Inference;

/// <summary>
/// One text as model input: token ids, and the span of instruction tokens (attended to, not pooled).
/// </summary>
internal readonly record struct EncodedText(int[] Ids, int InstructionStart, int InstructionLength, bool Truncated)
{
    public int Length => Ids.Length;

    /// <summary>Pre-tokenized input, used exactly as given (no instruction, no special tokens added).</summary>
    public static EncodedText FromIds(IReadOnlyList<int> ids) => new(ids.ToArray(), 0, 0, false);
}

/// <summary>
/// Builds model inputs from text the same way for every surface: the tokenizer's prefix special tokens (BOS /
/// [CLS]), then the instruction's tokens, then the text's tokens, then the suffix special tokens (EOS / [SEP]).
/// Instruction and text are tokenized separately (no magic separator), so the boundary is exact. Content is cut
/// from the end when the whole would exceed the maximum length; special tokens are kept.
/// A text longer than <see cref="MaxCharsPerToken"/> × the maximum length is cut to that many characters before it is
/// tokenized (and counted as truncated): a 10 MB line costs the tokenizer no more than a text of that bound, and the
/// tokens kept are those of the whole text unless its tokens average more than <see cref="MaxCharsPerToken"/> characters.
/// </summary>
internal static class TextEncoding
{
    /// <summary>Characters tokenized per token of the maximum length, at most (see the class remarks).</summary>
    public const int MaxCharsPerToken = 64;

    public static EncodedText Encode(ITextTokenizer tokenizer, string text, string? instruction, int maxLength)
    {
        ArgumentNullException.ThrowIfNull(text);
        bool cut = false;
        long bound = (long)Math.Max(maxLength, 1) * MaxCharsPerToken;
        if (text.Length > bound)
        {
            int keep = (int)bound;
            if (char.IsHighSurrogate(text[keep - 1])) keep--;   // never split a surrogate pair
            text = text[..keep];
            cut = true;
        }
        var prefix = tokenizer.PrefixTokenIds;
        var suffix = tokenizer.SuffixTokenIds;
        var instr = string.IsNullOrEmpty(instruction) ? [] : tokenizer.Encode(instruction, addSpecialTokens: false);
        var body = tokenizer.Encode(text, addSpecialTokens: false);
        int room = maxLength - prefix.Count - suffix.Count;
        if (room < 1)
            throw new UllmeException($"max length {maxLength} leaves no room for text after the model's {prefix.Count + suffix.Count} special tokens.");
        int instrKept = Math.Min(instr.Count, room);
        int bodyKept = Math.Min(body.Count, room - instrKept);
        bool truncated = cut || instrKept < instr.Count || bodyKept < body.Count;

        var ids = new int[prefix.Count + instrKept + bodyKept + suffix.Count];
        int n = 0;
        foreach (int id in prefix) ids[n++] = id;
        for (int i = 0; i < instrKept; i++) ids[n++] = instr[i];
        for (int i = 0; i < bodyKept; i++) ids[n++] = body[i];
        foreach (int id in suffix) ids[n++] = id;
        if (ids.Length == 0)
        {
            // A tokenizer without special tokens (e.g. Qwen2) gives nothing for an empty string; the model needs at
            // least one position, so an empty text is represented by the end-of-sequence token.
            ids = [tokenizer.EosTokenId ?? tokenizer.PadTokenId ?? tokenizer.BosTokenId ?? 0];
        }
        return new EncodedText(ids, prefix.Count, instrKept, truncated);
    }
}
