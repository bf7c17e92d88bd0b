using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Ullme.MLNet.Server;

/// <summary>
/// A request the server answers with an error: the status code and OpenAI's error body
/// <c>{"error": {"message", "type", "param", "code"}}</c> (<c>param</c> names the offending field, when there is one).
/// </summary>
internal sealed class ApiException(int status, string message, string type = ApiException.InvalidRequest, string? code = null, string? param = null)
    : Exception(message)
{
    public const string InvalidRequest = "invalid_request_error";

    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Code { get; } = code;
    public string? Param { get; } = param;

    /// <summary>A 400 naming the field.</summary>
    public static ApiException BadField(string param, string message, string code = "invalid_value") =>
        new(StatusCodes.Status400BadRequest, message, InvalidRequest, code, param);

    public static async Task WriteAsync(HttpContext context, int status, string message, string type, string? code, string? param)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await using var w = new Utf8JsonWriter(context.Response.Body);
        w.WriteStartObject();
        w.WriteStartObject("error");
        w.WriteString("message", message);
        w.WriteString("type", type);
        if (param is null) w.WriteNull("param"); else w.WriteString("param", param);
        if (code is null) w.WriteNull("code"); else w.WriteString("code", code);
        w.WriteEndObject();
        w.WriteEndObject();
        await w.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }
}
