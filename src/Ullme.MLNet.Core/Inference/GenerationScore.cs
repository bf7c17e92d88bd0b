namespace Ullme.MLNet.Inference;

/// <summary>How a candidate's generation score s_gen is formed from its token log-probs (scoring, reranking and
/// the GRL training objective use the same choice).</summary>
public enum GenerationScore
{
    /// <summary>Mean token log-prob (length-normalised; the default).</summary>
    Mean,

    /// <summary>Sum of token log-probs, i.e. log p(c | prompt).</summary>
    Sum,
}
