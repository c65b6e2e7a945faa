using System.Text.Json;
using System.Text.Json.Nodes;

namespace RetriKT.MLNet.Common;

/// <summary>The JSON configuration files read beside models (config.json, tokenizer_config.json, indexes …).</summary>
internal static class JsonFiles
{
    /// <summary>
    /// The JSON object in <paramref name="path"/>; a file that is not valid JSON, or holds something other than an
    /// object, fails with one line naming the file.
    /// </summary>
    public static JsonObject ReadObject(string path)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message}).", e); }
        return node as JsonObject ?? throw new InvalidDataException($"{path}: expected a JSON object, found {node?.GetValueKind().ToString() ?? "null"}.");
    }
}
