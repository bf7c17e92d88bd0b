using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Ullme.MLNet.Server;

/// <summary>One input of a request: a text, or token ids used exactly as given.</summary>
internal readonly record struct RequestInput(string? Text, int[]? Ids, string Path);

/// <summary>Reads request bodies and their fields; every failure is a 400 (413 for size) naming the field.</summary>
internal static class JsonFields
{
    /// <summary>The body as a JSON object, read with a size limit (413 beyond it).</summary>
    public static async Task<JsonDocument> ReadObjectAsync(HttpContext context, long limit)
    {
        var request = context.Request;
        if (request.ContentLength is { } declared && declared > limit) throw TooLarge(declared, limit);
        byte[] body;
        try
        {
            using var buffer = new MemoryStream();
            var chunk = new byte[16384];
            while (true)
            {
                int read = await request.Body.ReadAsync(chunk, context.RequestAborted).ConfigureAwait(false);
                if (read == 0) break;
                if (buffer.Length + read > limit) throw TooLarge(null, limit);
                buffer.Write(chunk, 0, read);
            }
            body = buffer.ToArray();
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw TooLarge(null, limit);
        }
        if (body.Length == 0) throw new ApiException(StatusCodes.Status400BadRequest, "The request body is empty; expected a JSON object.", code: "invalid_json");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new ApiException(StatusCodes.Status400BadRequest, $"The request body is not valid JSON: {e.Message}", code: "invalid_json");
        }
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = doc.RootElement.ValueKind;
            doc.Dispose();
            throw new ApiException(StatusCodes.Status400BadRequest, $"The request body must be a JSON object (got {Kind(kind)}).", code: "invalid_json");
        }
        return doc;
    }

    private static ApiException TooLarge(long? size, long limit) => new(StatusCodes.Status413PayloadTooLarge,
        $"The request body {(size is { } s ? $"({s} bytes) " : "")}exceeds the limit of {limit} bytes (--max-body-bytes).",
        code: "request_too_large");

    public static string Kind(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => "nothing",
    };

    /// <summary>The property, or null when absent or JSON null (optional fields accept null as OpenAI's do).</summary>
    public static JsonElement? Get(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public static JsonElement Required(JsonElement obj, string name, string path) =>
        Get(obj, name) ?? throw ApiException.BadField(path, $"'{path}' is required.", "missing_field");

    public static string? OptionalString(JsonElement obj, string name, string path)
    {
        if (Get(obj, name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.String) throw ApiException.BadField(path, $"'{path}' must be a string (got {Kind(v.ValueKind)}).", "invalid_type");
        return v.GetString();
    }

    public static string RequiredString(JsonElement obj, string name, string path)
    {
        var v = Required(obj, name, path);
        if (v.ValueKind != JsonValueKind.String) throw ApiException.BadField(path, $"'{path}' must be a string (got {Kind(v.ValueKind)}).", "invalid_type");
        return v.GetString()!;
    }

    public static bool OptionalBool(JsonElement obj, string name, string path, bool fallback)
    {
        if (Get(obj, name) is not { } v) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw ApiException.BadField(path, $"'{path}' must be a boolean (got {Kind(v.ValueKind)}).", "invalid_type"),
        };
    }

    public static int? OptionalInt(JsonElement obj, string name, string path)
    {
        if (Get(obj, name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i))
            throw ApiException.BadField(path, $"'{path}' must be an integer (got {Describe(v)}).", "invalid_type");
        return i;
    }

    public static double? OptionalNumber(JsonElement obj, string name, string path)
    {
        if (Get(obj, name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || !double.IsFinite(d))
            throw ApiException.BadField(path, $"'{path}' must be a number (got {Describe(v)}).", "invalid_type");
        return d;
    }

    private static string Describe(JsonElement v) => v.ValueKind == JsonValueKind.Number ? v.GetRawText() : Kind(v.ValueKind);

    /// <summary>
    /// OpenAI's <c>input</c> (and TEI's <c>inputs</c>): a string, an array of strings, an array of token ids, or an
    /// array of token-id arrays. Errors name the element, e.g. <c>input[2]</c> or <c>input[1][4]</c>.
    /// </summary>
    public static List<RequestInput> Inputs(JsonElement value, string path)
    {
        var result = new List<RequestInput>();
        switch (value.ValueKind)
        {
            case JsonValueKind.String:
                result.Add(new RequestInput(value.GetString()!, null, path));
                return result;
            case JsonValueKind.Array:
                break;
            default:
                throw ApiException.BadField(path, $"'{path}' must be a string, an array of strings, an array of token ids or an array of token-id arrays (got {Kind(value.ValueKind)}).", "invalid_type");
        }
        int n = value.GetArrayLength();
        if (n == 0) throw ApiException.BadField(path, $"'{path}' must not be an empty array.");
        var first = value[0].ValueKind;
        if (first == JsonValueKind.Number)
        {
            result.Add(new RequestInput(null, Ids(value, path), path));
            return result;
        }
        int i = 0;
        foreach (var e in value.EnumerateArray())
        {
            string at = $"{path}[{i}]";
            if (first == JsonValueKind.String)
            {
                if (e.ValueKind != JsonValueKind.String) throw ApiException.BadField(at, $"'{at}' must be a string like the other elements of '{path}' (got {Kind(e.ValueKind)}).", "invalid_type");
                result.Add(new RequestInput(e.GetString()!, null, at));
            }
            else if (first == JsonValueKind.Array)
            {
                if (e.ValueKind != JsonValueKind.Array) throw ApiException.BadField(at, $"'{at}' must be an array of token ids like the other elements of '{path}' (got {Kind(e.ValueKind)}).", "invalid_type");
                result.Add(new RequestInput(null, Ids(e, at), at));
            }
            else
                throw ApiException.BadField(at, $"'{at}' must be a string, a token id or an array of token ids (got {Kind(e.ValueKind)}).", "invalid_type");
            i++;
        }
        return result;
    }

    /// <summary>A non-empty array of integer token ids.</summary>
    public static int[] Ids(JsonElement array, string path)
    {
        if (array.ValueKind != JsonValueKind.Array) throw ApiException.BadField(path, $"'{path}' must be an array of token ids (got {Kind(array.ValueKind)}).", "invalid_type");
        int n = array.GetArrayLength();
        if (n == 0) throw ApiException.BadField(path, $"'{path}' must not be an empty array of token ids.");
        var ids = new int[n];
        int j = 0;
        foreach (var e in array.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out ids[j]))
                throw ApiException.BadField($"{path}[{j}]", $"'{path}[{j}]' must be an integer token id (got {Describe(e)}).", "invalid_type");
            j++;
        }
        return ids;
    }
}
