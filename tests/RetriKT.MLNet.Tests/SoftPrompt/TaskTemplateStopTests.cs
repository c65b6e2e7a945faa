using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>
/// A teacher that learned its task through the template writes the template's label phrase after a sample ("… It was
/// great"); generation stops there so the store never holds the answer inside the text.
/// </summary>
public sealed class TaskTemplateStopTests
{
    [Fact]
    public void GenerationStopsAtTheTemplateTextThatFollowsTheGeneratedPart()
    {
        Assert.Equal(["\n", "It was"], TaskTemplates.Sst2.GenerationStops);
        Assert.Equal("a gorgeous , moving film", TaskTemplates.Sst2.CutAtStops("a gorgeous , moving film It was great"));
        Assert.Equal("it was a mess", TaskTemplates.Sst2.CutAtStops("it was a mess\nmore"));
        Assert.Equal("untouched text", TaskTemplates.Sst2.CutAtStops("untouched text"));
        // Pair tasks stop after the generated second part, before "? Answer:".
        Assert.Contains("? Answer:", TaskTemplates.Rte.GenerationStops);
        Assert.Equal("the cat sat on the mat", TaskTemplates.Rte.CutAtStops("the cat sat on the mat? Answer: yes"));
    }
}
