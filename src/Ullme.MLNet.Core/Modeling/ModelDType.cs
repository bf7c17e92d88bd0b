namespace Ullme.MLNet.Modeling;

/// <summary>The floating-point type weights are held and computed in.</summary>
public enum ModelDType
{
    /// <summary>32-bit IEEE floats: the reference precision.</summary>
    Float32,

    /// <summary>bfloat16 weights and matmuls; norms and softmax accumulate in float32.</summary>
    BFloat16,
}
