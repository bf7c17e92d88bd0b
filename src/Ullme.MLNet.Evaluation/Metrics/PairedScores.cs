namespace Ullme.MLNet.Evaluation.Metrics;

/// <summary>
/// Row-wise similarities between two lists of embeddings, the four scores MTEB computes for STS and pair
/// classification. Cosine normalises each row first (like sklearn's <c>paired_cosine_distances</c>), so it does
/// not depend on whether the embedder normalised. Distances are returned as they are; callers negate them where a
/// similarity is wanted (MTEB's STS uses <c>-manhattan</c> and <c>-euclidean</c>).
/// </summary>
internal static class PairedScores
{
    public static double[] Cosine(IReadOnlyList<float[]> a, IReadOnlyList<float[]> b) => Map(a, b, CosineOf);

    public static double[] Dot(IReadOnlyList<float[]> a, IReadOnlyList<float[]> b) => Map(a, b, DotOf);

    public static double[] Euclidean(IReadOnlyList<float[]> a, IReadOnlyList<float[]> b) => Map(a, b, EuclideanOf);

    public static double[] Manhattan(IReadOnlyList<float[]> a, IReadOnlyList<float[]> b) => Map(a, b, ManhattanOf);

    /// <summary>Cosine of two vectors; 0 when either is all zeros (sklearn leaves zero rows unnormalised).</summary>
    public static double CosineOf(float[] x, float[] y)
    {
        CheckWidth(x, y);
        double dot = 0, nx = 0, ny = 0;
        for (int i = 0; i < x.Length; i++)
        {
            dot += (double)x[i] * y[i];
            nx += (double)x[i] * x[i];
            ny += (double)y[i] * y[i];
        }
        if (nx == 0 || ny == 0) return 0;
        return dot / (Math.Sqrt(nx) * Math.Sqrt(ny));
    }

    public static double DotOf(float[] x, float[] y)
    {
        CheckWidth(x, y);
        double dot = 0;
        for (int i = 0; i < x.Length; i++) dot += (double)x[i] * y[i];
        return dot;
    }

    public static double EuclideanOf(float[] x, float[] y)
    {
        CheckWidth(x, y);
        double s = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double d = (double)x[i] - y[i];
            s += d * d;
        }
        return Math.Sqrt(s);
    }

    public static double ManhattanOf(float[] x, float[] y)
    {
        CheckWidth(x, y);
        double s = 0;
        for (int i = 0; i < x.Length; i++) s += Math.Abs((double)x[i] - y[i]);
        return s;
    }

    private static double[] Map(IReadOnlyList<float[]> a, IReadOnlyList<float[]> b, Func<float[], float[], double> f)
    {
        if (a.Count != b.Count) throw new ArgumentException($"paired scores need equal counts, got {a.Count} and {b.Count}");
        var result = new double[a.Count];
        for (int i = 0; i < a.Count; i++) result[i] = f(a[i], b[i]);
        return result;
    }

    private static void CheckWidth(float[] x, float[] y)
    {
        if (x.Length != y.Length) throw new ArgumentException($"embeddings differ in width: {x.Length} vs {y.Length}");
    }
}
