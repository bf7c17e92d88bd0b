namespace Ullme.MLNet.Modeling;

/// <summary>
/// How tokens may attend to each other in one forward pass. The same weights serve both modes; the mode is
/// chosen per call.
/// </summary>
public enum AttentionMode
{
    /// <summary>Query i sees key j iff j &lt;= i and key j is not padding (and, for sliding-window layers,
    /// i - j &lt; window). The mode a decoder was pre-trained in; required for log-likelihood scoring.</summary>
    Causal,

    /// <summary>Query i sees every non-padded key. Positions (RoPE) are unchanged and sliding windows are off.</summary>
    Bidirectional,
}
