using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tensors;

/// <summary>
/// Scalars that live as long as the process, for the constants TorchSharp would otherwise convert implicitly on
/// every call (and may then finalize mid-call, see <see cref="ScalarOps"/>). Never dispose them.
/// <para>Integral Scalars here are the same c10 value (<c>int64</c>, integral tag) as TorchSharp's implicit
/// <c>int</c> conversion makes, so replacing <c>t.add(u)</c> (which is <c>t.add(u, 1)</c> inside TorchSharp) by
/// <c>t.add(u, Scalars.One)</c> gives the same bits.</para>
/// </summary>
internal static class Scalars
{
    /// <summary>Integral 0.</summary>
    public static readonly Scalar Zero = 0L.ToScalar();

    /// <summary>Integral 1: TorchSharp's own hidden <c>alpha</c> of <c>add(Tensor)</c>, <c>add(Scalar)</c>, <c>add_</c>.</summary>
    public static readonly Scalar One = 1L.ToScalar();

    /// <summary>Integral 2: the exponent of <c>square()</c>.</summary>
    public static readonly Scalar Two = 2L.ToScalar();
}

/// <summary>
/// Tensor operations with a number operand, each holding its <see cref="Scalar"/> across the native call.
/// <para>
/// Why: in TorchSharp 0.107 a number given to a tensor op (<c>t * 0.5</c>, <c>t.masked_fill(m, -1e9)</c>,
/// <c>t.clamp_min(1e-12)</c>) becomes a temporary <see cref="Scalar"/> through <c>Scalar.op_Implicit</c>, and the
/// wrapper passes only its raw handle to libtorch without <c>GC.KeepAlive</c>; several wrappers also make one of their
/// own (<c>a + b</c> is <c>add(b, alpha: 1)</c>, <c>t.square()</c> is <c>pow(2)</c>, <c>arange(n)</c> is
/// <c>arange(0, n, 1)</c>). Once the handle is read the Scalar is unreachable, so a garbage collection started by any
/// other thread may run its finalizer while the kernel still reads it: "Expected false to be true ... toFloat" from
/// c10, or a silently wrong value. Scalars are not tracked by dispose scopes.
/// </para>
/// <para>
/// Each method here makes the Scalar with <c>using</c> (referenced until its <c>Dispose</c> after the call, then freed
/// at once) or uses one of <see cref="Scalars"/>, and calls exactly the TorchSharp overload the operator would have
/// called, with a Scalar of the same type, so results are bit-identical to the operator form. Names are PascalCase
/// so that they never collide with TorchSharp's own (<c>Mul</c> here, <c>mul</c> there). <c>double</c> and
/// <c>long</c> overloads cover every C# number: c10 stores a float as a double and every integer as an int64, so
/// widening at the call is exact and yields the same Scalar.
/// </para>
/// <para>The check: tests/Ullme.MLNet.Tests/Reliability/ScalarRuleTests scans the compiled library for any other way
/// of handing libtorch a Scalar (docs/reliability.md, "The Scalar rule").</para>
/// </summary>
internal static class ScalarOps
{
    /// <summary><c>a + b</c>: <c>a.add(b, alpha: 1)</c>.</summary>
    public static Tensor Add(this Tensor a, Tensor b) => a.add(b, Scalars.One);

    /// <summary><c>a.add_(b)</c>: in place, alpha 1.</summary>
    public static Tensor AddInPlace(this Tensor a, Tensor b) => a.add_(b, Scalars.One);

    /// <summary><c>a + v</c>.</summary>
    public static Tensor Add(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.add(s, Scalars.One);
    }

    /// <summary><c>a + v</c>.</summary>
    public static Tensor Add(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        return a.add(s, Scalars.One);
    }

    /// <summary><c>a - v</c>.</summary>
    public static Tensor Sub(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.sub(s);
    }

    /// <summary><c>a - v</c>.</summary>
    public static Tensor Sub(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        return a.sub(s);
    }

    /// <summary><c>v - a</c>, as TorchSharp's operator computes it: <c>(-a) + v</c>.</summary>
    public static Tensor SubtractedFrom(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        using var negative = a.negative();
        return negative.add(s, Scalars.One);
    }

    /// <summary><c>v - a</c>, as TorchSharp's operator computes it: <c>(-a) + v</c>.</summary>
    public static Tensor SubtractedFrom(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        using var negative = a.negative();
        return negative.add(s, Scalars.One);
    }

    /// <summary><c>a * v</c> (and <c>v * a</c>).</summary>
    public static Tensor Mul(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.mul(s);
    }

    /// <summary><c>a * v</c> (and <c>v * a</c>).</summary>
    public static Tensor Mul(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        return a.mul(s);
    }

    /// <summary><c>a.mul_(v)</c>: in place.</summary>
    public static Tensor MulInPlace(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.mul_(s);
    }

    /// <summary><c>a / v</c>.</summary>
    public static Tensor Div(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.div(s);
    }

    /// <summary><c>a / v</c> (true division, as the operator: an integral tensor gives floats).</summary>
    public static Tensor Div(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        return a.div(s);
    }

    /// <summary><c>a.pow(v)</c>.</summary>
    public static Tensor Pow(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.pow(s);
    }

    /// <summary><c>a.pow(v)</c>.</summary>
    public static Tensor Pow(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        return a.pow(s);
    }

    /// <summary><c>a.square()</c>: <c>pow(2)</c>, as TorchSharp computes it.</summary>
    public static Tensor Square(this Tensor a) => a.pow(Scalars.Two);

    /// <summary><c>a.masked_fill(mask, v)</c>.</summary>
    public static Tensor MaskedFill(this Tensor a, Tensor mask, double v)
    {
        using var s = v.ToScalar();
        return a.masked_fill(mask, s);
    }

    /// <summary><c>a.masked_fill(mask, v)</c>.</summary>
    public static Tensor MaskedFill(this Tensor a, Tensor mask, long v)
    {
        using var s = v.ToScalar();
        return a.masked_fill(mask, s);
    }

    /// <summary><c>a.clamp_min(v)</c>.</summary>
    public static Tensor ClampMin(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.clamp_min(s);
    }

    /// <summary><c>a.clamp_min(v)</c>.</summary>
    public static Tensor ClampMin(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        return a.clamp_min(s);
    }

    /// <summary><c>a == v</c>.</summary>
    public static Tensor Eq(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        return a.eq(s);
    }

    /// <summary><c>a &gt;= v</c>.</summary>
    public static Tensor Ge(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        return a.ge(s);
    }

    /// <summary><c>a &gt; v</c>.</summary>
    public static Tensor Gt(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.gt(s);
    }

    /// <summary><c>a &lt; v</c>.</summary>
    public static Tensor Lt(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.lt(s);
    }

    /// <summary><c>a &lt; v</c>.</summary>
    public static Tensor Lt(this Tensor a, long v)
    {
        using var s = v.ToScalar();
        return a.lt(s);
    }

    /// <summary><c>torch.arange(stop)</c>: <c>arange(0, stop, 1)</c>, as TorchSharp computes it.</summary>
    public static Tensor Arange(long stop, ScalarType? dtype = null, Device? device = null)
    {
        using var end = stop.ToScalar();
        return arange(Scalars.Zero, end, Scalars.One, dtype, device);
    }

    /// <summary><c>torch.arange(start, stop, step)</c>.</summary>
    public static Tensor Arange(long start, long stop, long step, ScalarType? dtype = null, Device? device = null)
    {
        using var first = start.ToScalar();
        using var end = stop.ToScalar();
        using var stride = step.ToScalar();
        return arange(first, end, stride, dtype, device);
    }

    /// <summary><c>torch.full_like(like, v)</c>.</summary>
    public static Tensor FullLike(Tensor like, double v)
    {
        using var s = v.ToScalar();
        return full_like(like, s);
    }
}
