namespace Ullme.MLNet.Inference;
public static class DefaultModel { public const string HuggingFaceId = "x"; public static string EnsureFolder() => throw new NotImplementedException(); }
