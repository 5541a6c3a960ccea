"""upload_file: put a local file on fal storage, for use as any tool's *_url input."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fal_mcp import MediaError, Tool, ToolContext, ToolError, ToolHints, ToolInput, ToolResult


class UploadFileInput(ToolInput):
    file_path: str = Field(min_length=1, max_length=4096, description="Inside the allowed directories")


class Uploaded(BaseModel):
    model_config = ConfigDict(defer_build=True)

    url: str
    file_path: str


async def upload_file(args: UploadFileInput, ctx: ToolContext) -> ToolResult:
    if args.file_path.startswith(("http://", "https://", "data:")):
        raise ToolError(
            "file_path: give a local file path; URLs and data: URIs can be passed to tools directly"
        )
    try:
        url = await ctx.media_url(args.file_path)
    except MediaError as exc:
        raise ToolError(f"file_path: {exc}") from None
    return ToolResult(f"Uploaded {args.file_path} to {url}", Uploaded(url=url, file_path=args.file_path))


TOOL = Tool(
    name="upload_file",
    title="Upload a file",
    description="Upload a local file to fal storage; returns its URL.",
    input_model=UploadFileInput,
    handler=upload_file,
    output_model=Uploaded,
    hints=ToolHints(idempotent=True),
    category="utility",
)
