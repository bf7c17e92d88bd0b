namespace Ullme.MLNet.Pooling;

/// <summary>How a sequence of token states becomes one embedding.</summary>
public enum PoolingMode
{
    /// <summary>Average of the states of pooled tokens (attention mask minus instruction tokens).</summary>
    Mean,

    /// <summary>Position-weighted average (SGPT / LLM2Vec): the k-th pooled token has weight k, so later tokens,
    /// which have seen more context under causal attention, count more.</summary>
    WeightedMean,

    /// <summary>State of the last non-padded token (correct under left and right padding).</summary>
    LastToken,

    /// <summary>State of the first non-padded token (BERT's [CLS]).</summary>
    FirstToken,
}
