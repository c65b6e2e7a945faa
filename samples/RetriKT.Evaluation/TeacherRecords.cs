using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Teacher;

namespace RetriKT.Evaluation;

/// <summary>
/// docs/evaluation/teachers.jsonl: one line per (task, teacher content hash) the results were made with, holding the
/// teacher's build record (recipe, corpus sizes, tokens seen, final losses) so the report can say what each teacher is
/// without the build cache.
/// </summary>
public static class TeacherRecords
{
    public static void Record(string path, string task, string teacherPath, TeacherModel teacher)
    {
        var existing = Read(path);
        if (existing.Any(r => r["task"]?.GetValue<string>() == task && r["contentHash"]?.GetValue<string>() == teacher.ContentHash)) return;
        var record = new JsonObject
        {
            ["task"] = task, ["contentHash"] = teacher.ContentHash, ["parameters"] = teacher.ParameterCount, ["config"] = teacher.Config.ToString(),
            ["source"] = Path.GetFileName(Path.TrimEndingDirectorySeparator(teacherPath)),
        };
        var done = Path.Combine(teacherPath, "done.json");
        if (File.Exists(done)) record["build"] = JsonNode.Parse(File.ReadAllText(done));
        JsonLines.Append(path, record.ToJsonString());
    }

    public static List<JsonObject> Read(string path) => !File.Exists(path) ? [] : File.ReadLines(path)
        .Where(l => !string.IsNullOrWhiteSpace(l))
        .Select(l => { try { return JsonNode.Parse(l) as JsonObject; } catch (JsonException) { return null; } })
        .OfType<JsonObject>().ToList();
}
